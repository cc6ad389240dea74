"""HTTP intake: bodies are JSON whatever the Content-Type says; no form parsing on the way in."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.e2e.harness import APP_TOKEN, CHANNEL, Bridge


def _post(bridge: Bridge, body: bytes, content_type: str) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", bridge.ready["api"], timeout=15)
    try:
        conn.request("POST", "/v1/sms", body=body, headers={
            "Authorization": f"Bearer {APP_TOKEN}", "Content-Type": content_type})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw.startswith(b"{") else {"raw": raw.decode("latin-1")}
    finally:
        conn.close()


@pytest.mark.parametrize("content_type", [
    "multipart/form-data; boundary=xyz",
    "application/x-www-form-urlencoded",
    "application/json; charset=utf-8",
])
def test_json_body_is_read_under_any_content_type(bridge: Bridge, content_type: str) -> None:
    """twisted.web's form parsing is off: a multipart label no longer turns a JSON body into a bare 400."""
    body = json.dumps({"from": CHANNEL, "to": ["+8613800138000"], "templateId": "otp",
                       "templateParas": ["123456"]}).encode()
    status, answer = _post(bridge, body, content_type)
    assert status == 200, answer
    assert answer["code"] == "000000"
    message_id = answer["result"][0]["smsMsgId"]  # type: ignore[index]
    assert bridge.message(message_id)["to"] == "+8613800138000"


def test_form_body_is_a_json_error(bridge: Bridge) -> None:
    """A real form body is refused by the JSON parser with the API's own error, not parsed as a form."""
    status, answer = _post(bridge, b"from=1&to=2", "application/x-www-form-urlencoded")
    assert status == 400
    assert answer["code"] == "E200001"


def test_accepted_answer_has_its_length_not_chunks(bridge: Bridge) -> None:
    """The 200 is written after the commit; it declares its length instead of being chunked."""
    body = json.dumps({"from": CHANNEL, "to": ["+8613800138000"], "templateId": "otp",
                       "templateParas": ["123456"]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", bridge.ready["api"], timeout=15)
    try:
        for _ in range(2):   # and the connection stays usable for the next request
            conn.request("POST", "/v1/sms", body=body, headers={"Authorization": f"Bearer {APP_TOKEN}"})
            resp = conn.getresponse()
            raw = resp.read()
            assert resp.status == 200
            assert resp.getheader("Transfer-Encoding") is None
            assert resp.getheader("Content-Length") == str(len(raw))
            assert json.loads(raw)["code"] == "000000"
    finally:
        conn.close()
