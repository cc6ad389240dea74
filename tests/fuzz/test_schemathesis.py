"""schemathesis against the daemon's own ``GET /openapi.json``: the API does what its document says.

One daemon serves the module. Every operation gets positive and negative cases
(bounded, so the module runs in well under a minute), sent with the token the
operation needs. The checks: no 5xx; only documented status codes, content types
and headers; bodies that match their response schema; requests that break the
request schema are refused (the document promises nothing it does not enforce);
and no operation that needs a token answers without one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from bridge.config import load_config
from bridge.openapi import openapi_document
from tests.e2e.harness import APP_TOKEN, CHANNEL, OPERATOR_TOKEN, Bridge, wait_for

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "default.toml"

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, ignored_auth]
OPERATOR_ONLY = ("/v1/apps", "/v1/blacklist", "/v1/blacklist/{channel_no}/{number}", "/v1/console/stats",
                 "/v1/console/messages", "/v1/console/message/{smsMsgId}", "/v1/outbox/{id}/replay")


@pytest.fixture(scope="module", name="api_schema")
def _api_schema(bridge: Bridge) -> schemathesis.BaseSchema:
    """The document as the daemon serves it; requests go to the server it names (the daemon)."""
    schema = schemathesis.openapi.from_url(f"{bridge.api}/openapi.json")
    # Unknown query parameters and headers are ignored, as HTTP APIs commonly do; OpenAPI 3.0
    # cannot say so, so negative cases do not add them.
    schema.config.generation.update(allow_extra_parameters=False)
    return schema


def auth_headers(case: schemathesis.Case, mode: GenerationMode) -> dict[str, str]:
    """The token the operation needs: the operator's for admin calls, the application's otherwise.

    A negative case that dropped or broke the Authorization header keeps it dropped
    or broken (it must be answered 401). The token goes in as a caller's header, so
    schemathesis knows it is real and checks separately that a missing one is refused.
    """
    generated = str((case.headers or {}).get("Authorization", ""))
    if mode is GenerationMode.NEGATIVE and not generated.startswith("Bearer "):
        return {}
    token = OPERATOR_TOKEN if case.operation.path in OPERATOR_ONLY else APP_TOKEN
    return {"Authorization": f"Bearer {token}"}


# schemathesis' own pytest loader for a schema from a fixture (``from_fixture``) does not
# run under pytest 9 (it writes ``Function._nodeid``), so operations are parametrized here
# and each test draws cases from schemathesis' strategy for its operation.
DOCUMENT = openapi_document(load_config(DEFAULT_CONFIG))
OPERATIONS = sorted(
    (method.upper(), path, mode) for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items() if method != "parameters"
    for mode in GenerationMode
    # Negative cases need something to break: a parameter or a body.
    if mode is GenerationMode.POSITIVE or "parameters" in item or {"parameters", "requestBody"} & set(operation)
)


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS, ids=[f"{m} {p} {g.value}" for m, p, g in OPERATIONS])
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_operation_conforms(api_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode,
                            data: st.DataObject) -> None:
    """Positive and negative cases of every operation get documented answers only, never a 5xx."""
    case = data.draw(api_schema[path][method].as_strategy(generation_mode=mode))
    if method == "POST" and mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
        case.body["from"] = CHANNEL  # a real channel number, so validation goes past the first field
    response = case.call_and_validate(headers=auth_headers(case, mode), checks=CHECKS)
    event(f"HTTP {response.status_code}")


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_documented_examples(api_schema: schemathesis.BaseSchema) -> None:
    """The document's own examples are accepted and answered as documented."""
    ran = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for strategy in operation.get_strategies_from_examples():
            case = strategy.example()
            response = case.call_and_validate(headers=auth_headers(case, GenerationMode.POSITIVE),
                                              checks=CHECKS)
            if operation.path == "/v1/sms":
                assert response.status_code == 200, response.text
            ran += 1
    assert ran >= 1


def test_stored_resources_answer_as_documented(api_schema: schemathesis.BaseSchema, bridge: Bridge) -> None:
    """A reported message, one with no carrier, and a blacklist entry made by a "T" reply match their schemas."""
    number = "+8613812340177"
    answer = bridge.send([number, "+8614412345678", number])
    delivered, no_route = answer["result"][0]["smsMsgId"], answer["result"][1]["smsMsgId"]
    wait_for(lambda: bridge.message(delivered)["reported"], what="an acknowledged status report")
    status, reply = bridge.sim("POST", "/mo", {"carrier": "cmcc", "from": number[1:], "to": CHANNEL, "text": "T"})
    assert status == 200, reply
    entry = f"{bridge.api}/v1/blacklist/{CHANNEL}/{number}"
    wait_for(lambda: bridge.request("GET", entry, token=OPERATOR_TOKEN)[0] == 200, what="blacklist entry")
    calls = [
        ("/v1/sms/{smsMsgId}", "GET", {"smsMsgId": delivered}, APP_TOKEN),
        ("/v1/sms/{smsMsgId}", "GET", {"smsMsgId": no_route}, OPERATOR_TOKEN),
        ("/v1/blacklist", "GET", None, OPERATOR_TOKEN),
        ("/v1/blacklist/{channel_no}/{number}", "GET", {"channel_no": CHANNEL, "number": number}, OPERATOR_TOKEN),
        ("/v1/blacklist/{channel_no}/{number}", "DELETE", {"channel_no": CHANNEL, "number": number}, OPERATOR_TOKEN),
    ]
    for path, method, params, token in calls:
        case = api_schema[path][method].Case(path_parameters=params)
        response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
        assert response.status_code == 200, (path, response.text)
    message = bridge.message(delivered)
    assert message["report"]["status"] == "DELIVRD" and message["segments"][0]["carrierMessageId"]


def test_served_document_is_openapi_document(bridge: Bridge) -> None:
    """GET /openapi.json needs no token and serves openapi_document() of the daemon's own config."""
    status, served = bridge.request("GET", f"{bridge.api}/openapi.json", token=None)
    assert status == 200
    assert served == openapi_document(load_config(bridge.config_path))
