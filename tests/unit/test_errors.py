"""The registry error table: codes, HTTP statuses and the JSON body clients parse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from proxy.errors import ErrorCode, RegistryError, error_body

# Statuses from the OCI distribution spec's error code table (and the README).
SPEC_STATUS: dict[str, int] = {
    "NAME_INVALID": 400,
    "TAG_INVALID": 400,
    "DIGEST_INVALID": 400,
    "PAGINATION_NUMBER_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "NAME_UNKNOWN": 404,
    "MANIFEST_UNKNOWN": 404,
    "BLOB_UNKNOWN": 404,
    "UNSUPPORTED": 405,
    "RANGE_INVALID": 416,
    "TOOMANYREQUESTS": 429,
    "UNAVAILABLE": 503,
}

# Every code a distribution client knows how to read.
KNOWN_WIRE_CODES = {
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_UNVERIFIED",
    "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "TAG_INVALID", "UNAUTHORIZED", "DENIED",
    "UNSUPPORTED", "TOOMANYREQUESTS", "UNKNOWN", "UNAVAILABLE", "PAGINATION_NUMBER_INVALID",
    "RANGE_INVALID",
}


def decode(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(("wire", "status"), sorted(SPEC_STATUS.items()))
def test_each_spec_code_has_the_spec_status(wire: str, status: int) -> None:
    code = ErrorCode.from_wire(wire)
    assert code is not None
    err = RegistryError(code)
    assert err.status == status
    assert decode(err.body())["errors"][0]["code"] == wire


def test_upstream_failures_are_gateway_errors_and_our_bugs_are_500() -> None:
    assert RegistryError(ErrorCode.UNKNOWN).status == 502
    assert RegistryError(ErrorCode.MANIFEST_INVALID).status == 502
    internal = RegistryError(ErrorCode.INTERNAL)
    assert internal.status == 500
    # Clients only know UNKNOWN; "INTERNAL" is not a wire code.
    assert decode(internal.body())["errors"][0]["code"] == "UNKNOWN"


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_every_code_on_the_wire_is_one_clients_know(code: ErrorCode) -> None:
    assert code.wire in KNOWN_WIRE_CODES
    assert 400 <= code.status < 600
    assert code.default_message


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_body_has_the_distribution_shape(code: ErrorCode) -> None:
    body = decode(RegistryError(code).body())
    assert list(body) == ["errors"]
    assert isinstance(body["errors"], list) and len(body["errors"]) == 1
    entry = body["errors"][0]
    assert set(entry) == {"code", "message", "detail"}
    assert entry["code"] == code.wire
    assert isinstance(entry["message"], str) and entry["message"]
    assert entry["detail"] is None


def test_message_and_detail_are_what_the_raiser_gave() -> None:
    err = RegistryError(ErrorCode.DENIED, "registry quay.io is not in registry.whitelist",
                        detail={"registry": "quay.io"})
    entry = decode(err.body())["errors"][0]
    assert entry == {
        "code": "DENIED",
        "message": "registry quay.io is not in registry.whitelist",
        "detail": {"registry": "quay.io"},
    }
    assert str(err) == "DENIED: registry quay.io is not in registry.whitelist"


def test_empty_message_falls_back_to_the_default() -> None:
    err = RegistryError(ErrorCode.BLOB_UNKNOWN, "")
    assert decode(err.body())["errors"][0]["message"] == ErrorCode.BLOB_UNKNOWN.default_message


def test_body_is_valid_json_for_awkward_messages() -> None:
    message = 'name "a\\b" has\nnewlines and \u00e9 and </script>'
    entry = decode(RegistryError(ErrorCode.NAME_INVALID, message).body())["errors"][0]
    assert entry["message"] == message


def test_error_body_matches_the_exception_body() -> None:
    err = RegistryError(ErrorCode.TAG_INVALID, "bad tag", detail=["x"])
    assert decode(error_body(ErrorCode.TAG_INVALID, "bad tag", ["x"])) == decode(err.body())


def test_headers_are_carried_and_copied() -> None:
    given = {"Retry-After": "30"}
    err = RegistryError(ErrorCode.TOOMANYREQUESTS, headers=given)
    given["Retry-After"] = "0"
    assert err.headers == {"Retry-After": "30"}
    assert RegistryError(ErrorCode.DENIED).headers == {}


@pytest.mark.parametrize("wire", sorted(SPEC_STATUS))
def test_from_wire_reads_upstream_codes_back(wire: str) -> None:
    code = ErrorCode.from_wire(wire)
    assert code is not None and code.wire == wire


def test_from_wire_unknown_means_the_upstream_failed_not_us() -> None:
    assert ErrorCode.from_wire("UNKNOWN") is ErrorCode.UNKNOWN


@pytest.mark.parametrize("wire", ["", "NOPE", "name_unknown", "INTERNAL", " DENIED", "BLOB_UPLOAD_UNKNOWN"])
def test_from_wire_returns_none_for_codes_outside_the_table(wire: str) -> None:
    assert ErrorCode.from_wire(wire) is None


def test_registry_error_is_an_exception_that_can_be_raised_and_caught() -> None:
    with pytest.raises(RegistryError) as info:
        raise RegistryError(ErrorCode.UNAVAILABLE, "upstream quay.io is unreachable")
    assert info.value.status == 503
    assert info.value.code is ErrorCode.UNAVAILABLE
