"""Unknown keys inside known tables, config phone numbers, and the keys other modules rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, load_config

TAIL = """
[[apps]]
id = "a"
token = "t"

[[channels]]
number = "10690001"
signature = "HUAWEI"
app = "a"
"""


def _load(tmp_path: Path, text: str, name: str = "bridge.toml"):
    path = tmp_path / name
    path.write_text(text + TAIL, encoding="utf-8")
    return load_config(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    return message


class TestUnknownKeys:
    @pytest.mark.parametrize(("text", "key"), [
        ("[store]\nurll = \"postgresql://x\"\n", "store.urll"),
        ("[api]\nprot = 8000\n", "api.prot"),
        ("[rules]\nexempt_number = []\n", "rules.exempt_number"),
        ("[logging]\nredacted = false\n", "logging.redacted"),
        ("[callbacks]\ntimeout = 3\n", "callbacks.timeout"),
        ("[simulator]\nembeded = true\n", "simulator.embeded"),
        ("[cluster]\nnodes = \"a\"\n", "cluster.nodes"),
        ("[carriers.cmcc]\ntsp = 10\n", "carriers.cmcc.tsp"),
        ("[carriers.cmcc]\nbinds = [{ type = \"transceiver\", cnt = 2 }]\n", "carriers.cmcc.binds[0].cnt"),
        ("[routing]\noverride = {}\n", "routing.override"),
        ("[[templates]]\nid = \"x\"\ntext = \"t\"\nklass = \"otp\"\n", "templates[0].klass"),
    ])
    def test_unknown_key_is_one_line_naming_file_and_key(self, tmp_path: Path, text: str, key: str) -> None:
        """A misspelt key is an error naming the file and the full key, not a silent default."""
        message = _error(tmp_path, text)
        assert message.startswith(f"{tmp_path / 'bridge.toml'}: {key}: unknown key")

    def test_unknown_key_in_array_of_tables(self, tmp_path: Path) -> None:
        """Keys of [[apps]] entries are checked too."""
        path = tmp_path / "apps.toml"
        path.write_text('[[apps]]\nid = "a"\ntoken = "t"\nuplink = "http://x"\n', encoding="utf-8")
        with pytest.raises(ConfigError, match=r"apps\[0\]\.uplink: unknown key"):
            load_config(path)

    def test_known_keys_of_free_tables_pass(self, tmp_path: Path) -> None:
        """Carrier ids and routing numbers are data, not keys to check."""
        cfg = _load(tmp_path, "[carriers.cmcc]\n[routing.overrides]\n\"+8613800138000\" = \"cmcc\"\n")
        assert cfg.routing_overrides == {"+8613800138000": "cmcc"}

    def test_secret_inline_and_env_both_read(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """``token_env`` beside ``token`` is not reported as an unknown key."""
        monkeypatch.setenv("OP_TOKEN", "from-env")
        cfg = _load(tmp_path, '[api]\noperator_token = "x"\noperator_token_env = "OP_TOKEN"\n')
        assert cfg.api.operator_token == "from-env"


class TestStoreAndCluster:
    def test_defaults(self, tmp_path: Path) -> None:
        cfg = _load(tmp_path, "")
        assert (cfg.api.header_timeout_s, cfg.api.body_timeout_s, cfg.api.idle_timeout_s,
                cfg.api.max_connections) == (10.0, 30.0, 60.0, 512)
        assert cfg.store.url is None and cfg.store.retention_days == 90
        assert cfg.cluster.node is None and cfg.cluster.failover_s == 10.0

    def test_url_from_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """``url_env`` resolves into ``url``; the URL (it holds a password) stays out of repr."""
        monkeypatch.setenv("BRIDGE_DB", "postgresql://u:secret@db/bridge")
        cfg = _load(tmp_path, '[store]\nurl_env = "BRIDGE_DB"\nretention_days = 30\n'
                              '[cluster]\nnode = "n1"\nfailover_s = 2.5\n')
        assert cfg.store.url == "postgresql://u:secret@db/bridge"
        assert "secret" not in repr(cfg.store)
        assert (cfg.store.retention_days, cfg.cluster.node, cfg.cluster.failover_s) == (30, "n1", 2.5)

    @pytest.mark.parametrize(("text", "expected"), [
        ('[store]\nurl_env = "NOPE_NOT_SET"\n', "store.url_env: environment variable NOPE_NOT_SET is not set"),
        ("[store]\nretention_days = 0\n", "store.retention_days: expected an integer"),
        ("[cluster]\nfailover_s = -1\n", "cluster.failover_s: expected a number"),
        ("[cluster]\nnode = 3\n", "cluster.node: expected a string"),
        ("[api]\nheader_timeout_s = 0\n", "api.header_timeout_s: expected a number >= 0.001"),
        ("[api]\nmax_connections = 0\n", "api.max_connections: expected an integer 1-1000000"),
    ])
    def test_bad_values(self, tmp_path: Path, text: str, expected: str) -> None:
        assert expected in _error(tmp_path, text)


class TestExemptNumbers:
    def test_numbers_normalised_like_requests(self, tmp_path: Path) -> None:
        """"13812343004" and "0086 138-1234-3005" become E.164 so they match request numbers."""
        cfg = _load(tmp_path, '[rules]\nexempt_numbers = ["13812343004", "0086 138-1234-3005", "+14155550100"]\n')
        assert cfg.rules.exempt_numbers == frozenset({"+8613812343004", "+8613812343005", "+14155550100"})

    def test_invalid_number_names_the_key(self, tmp_path: Path) -> None:
        message = _error(tmp_path, '[rules]\nexempt_numbers = ["+8613812343004", "12345"]\n')
        assert "rules.exempt_numbers[1]: not a phone number" in message

    def test_limit_international_defaults_off(self, tmp_path: Path) -> None:
        assert _load(tmp_path, "").rules.limit_international is False
        assert _load(tmp_path, "[rules]\nlimit_international = true\n").rules.limit_international is True
