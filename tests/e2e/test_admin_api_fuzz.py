"""The admin API fuzzed from its own OpenAPI document, against a real proxy process.

schemathesis reads /api/v1/openapi.json and sends each operation generated
input, valid and not: no answer is a 500, every error has the documented
shape, and answers conform to the document. A bounded number of examples
per operation keeps CI quick; REGISTRY_PROXY_LONG_TESTS=1 sends ten times more.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from proxy.api.openapi import OPENAPI
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from .admin import new_token
from .http import call
from .proxyproc import ProxyProcess, start_proxy

LONG = os.environ.get("REGISTRY_PROXY_LONG_TESTS") == "1"
EXAMPLES = 300 if LONG else 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@pytest.fixture(scope="module")
def fuzzed_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyProcess, str]]:
    token = new_token()
    proxy = start_proxy(tmp_path_factory.mktemp("fuzz") / "proxy", {}, env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    yield proxy, token
    proxy.stop()


# Loaded from the module at collection, so each operation is a test of its
# own; the first test checks that this is the document the proxy serves.
# The certificates operation connects to the address it is given: fuzzed,
# that would be any host on the internet.
schema = schemathesis.openapi.from_dict(OPENAPI).exclude(path_regex="/certificates$")


def test_the_fuzzed_document_is_the_one_served(fuzzed_proxy: tuple[ProxyProcess, str]) -> None:
    proxy, _ = fuzzed_proxy
    reply = call(proxy.host, "GET", "/api/v1/openapi.json")
    assert reply.status == 200
    assert reply.json() == json.loads(json.dumps(OPENAPI))


@schema.parametrize()
# The same inputs in every ordinary run, so a submission lands or not on its own merits; the long run explores.
@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not LONG,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_no_input_gets_a_500_and_every_answer_is_documented(case: Any, fuzzed_proxy: tuple[ProxyProcess, str]) -> None:
    proxy, token = fuzzed_proxy
    response = case.call(base_url=proxy.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"code", "message", "field"}, body
        assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
        assert body["error"]["field"] is None or isinstance(body["error"]["field"], str)


