"""The OpenAPI document itself: valid OpenAPI 3.0, complete, and free of secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from bridge.config import BridgeConfig, load_config
from bridge.intake import ERROR_CODES
from bridge.openapi import OPENAPI_VERSION, openapi_document

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "default.toml"


@pytest.fixture(name="config", scope="module")
def _config() -> BridgeConfig:
    return load_config(DEFAULT_CONFIG)


class TestDocument:
    def test_validates_as_openapi_3_0(self, config: BridgeConfig) -> None:
        """openapi-spec-validator accepts the document (schema, $refs, path parameters, operation ids)."""
        document = openapi_document(config)
        assert document["openapi"] == OPENAPI_VERSION == "3.0.3"
        validate(document)

    def test_every_route_is_documented(self, config: BridgeConfig) -> None:
        """Each route build_site serves appears with its methods."""
        paths = openapi_document(config)["paths"]
        methods = {path: sorted(m for m in item if m != "parameters") for path, item in paths.items()}
        assert methods == {
            "/v1/sms": ["post"], "/v1/sms/{smsMsgId}": ["get"], "/v1/binds": ["get"],
            "/v1/templates": ["get"], "/v1/apps": ["get"], "/v1/blacklist": ["get"],
            "/v1/blacklist/{channel_no}/{number}": ["delete", "get"], "/healthz": ["get"],
            "/metrics": ["get"], "/openapi.json": ["get"], "/v1/outbox/dead": ["get"],
            "/v1/console/stats": ["get"], "/v1/console/messages": ["get"],
            "/v1/console/message/{smsMsgId}": ["get"], "/v1/outbox/{id}/replay": ["post"],
        }

    def test_send_documents_every_rejection_code(self, config: BridgeConfig) -> None:
        """The 400 answer of POST /v1/sms names every intake error code, and the 413 the configured limit."""
        responses = openapi_document(config)["paths"]["/v1/sms"]["post"]["responses"]
        for code in set(ERROR_CODES) - {"E200041"}:
            assert code in responses["400"]["description"]
        assert str(config.api.max_body_bytes) in responses["413"]["description"]

    def test_tokens_and_admin_calls(self, config: BridgeConfig) -> None:
        """Bearer security everywhere but health, metrics and the document; admin calls take the operator's."""
        paths = openapi_document(config)["paths"]
        open_calls = {("get", "/healthz"), ("get", "/metrics"), ("get", "/openapi.json")}
        for path, item in paths.items():
            for method, operation in item.items():
                if method == "parameters":
                    continue
                security = operation["security"]
                assert (security == []) == ((method, path) in open_calls), (method, path)
                if path.startswith(("/v1/apps", "/v1/blacklist")):
                    assert security == [{"operatorToken": []}], (method, path)
                if security:
                    assert "401" in operation["responses"], (method, path)

    def test_no_secrets_or_configured_names(self, config: BridgeConfig) -> None:
        """The unauthenticated document names no token, password, template id or second channel."""
        text = json.dumps(openapi_document(config))
        secrets = [config.api.operator_token, *(a.token for a in config.apps.values()),
                   *(c.password for c in config.carriers.values()),
                   *(t for t in config.templates if t not in ("otp",)), "10690002"]
        for secret in filter(None, secrets):
            assert secret not in text
