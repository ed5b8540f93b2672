"""The status page's state of an upstream: the newest of its last answer, failure and block decides."""

from __future__ import annotations

from proxy.api.observer import UpstreamState
from proxy.api.status import contact_state


def test_never_contacted() -> None:
    assert contact_state(None)["contact"] == "not contacted"
    assert contact_state(UpstreamState())["contact"] == "not contacted"


def test_a_failure_after_a_success_is_the_state_and_the_success_is_kept_apart() -> None:
    state = UpstreamState(last_status=200, last_latency=0.012, last_seen=100.0, last_success=(100.0, 200, 0.012))
    assert contact_state(state)["contact"] == "ok"
    state.last_failure = 160.0
    state.errors.append([160.0, "registry quay.io (https://quay.io) is unreachable: refused", 1])
    shown = contact_state(state)
    assert shown["contact"] == "failing"
    assert shown["last_error"] == "registry quay.io (https://quay.io) is unreachable: refused"
    assert shown["last_success"] == {"time": 100.0, "status": 200, "latency_ms": 12.0}


def test_a_failing_answer_is_a_failure_and_a_later_answer_recovers() -> None:
    # A 502 is an answer and, at the same moment, a failure.
    state = UpstreamState(last_status=502, last_latency=0.01, last_seen=50.0, last_failure=50.0)
    state.errors.append([50.0, "upstream quay.io answered HTTP 502", 1])
    assert contact_state(state)["contact"] == "failing" and contact_state(state)["last_success"] is None
    state.last_status, state.last_seen, state.last_success = 200, 70.0, (70.0, 200, 0.01)
    assert contact_state(state) | {"last_success": None} == {
        "contact": "ok", "last_error": None, "last_success": None, "blocked": None}


def test_a_block_by_policy_is_not_a_failure() -> None:
    state = UpstreamState(blocked=(30.0, "registry.whitelist", "registry quay.io is not in registry.whitelist"))
    shown = contact_state(state)
    assert shown["contact"] == "blocked" and shown["last_error"] is None
    assert shown["blocked"] == {"time": 30.0, "policy": "registry.whitelist",
                                "message": "registry quay.io is not in registry.whitelist"}
    state.last_seen, state.last_status = 40.0, 200
    assert contact_state(state)["contact"] == "ok"
