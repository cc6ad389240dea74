"""Simulator config: profile defaults, TOML overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from carriers.sim.cli import main
from carriers.sim.config import ConfigError, MixEntry, OutcomeRule, load_config

from .helpers import build_config


class TestDefaults:
    def test_five_carriers_on_the_contract_ports(self):
        """Without a file every carrier listens on its DESIGN.md port and the control API on 8471."""
        config = load_config()
        assert {c.id: c.port for c in config.carriers} == {
            "cmcc": 2775, "cucc": 2776, "ctcc": 2777, "cbn": 2778, "intl": 2779}
        assert (config.control_host, config.control_port) == ("127.0.0.1", 8471)

    def test_profile_limits_and_default_rules(self):
        """Limits come from profiles.toml and the four suffix rules are on by default."""
        cbn = load_config().carrier("cbn")
        assert (cbn.max_binds, cbn.tps, cbn.window) == (2, 500, 32)
        assert [(r.suffix, r.stat) for r in cbn.rules] == [
            ("0000", "UNDELIV"), ("1111", None), ("2222", "REJECTD"), ("3333", "MK:0024")]
        assert cbn.mix == (MixEntry("DELIVRD", "000", 1.0),)

    def test_password_not_in_repr(self):
        """A logged config never shows a password."""
        assert "cmcc-pw" not in repr(load_config().carrier("cmcc"))


class TestOverrides:
    def test_sim_defaults_apply_to_every_carrier_and_carrier_keys_win(self, tmp_path):
        """[sim] values reach every carrier; [sim.carriers.<id>] overrides them for one."""
        config = build_config(tmp_path, """
[sim]
control_port = 0
tps = 7
[sim.carriers.cucc]
tps = 3
port = 0
password = "secret"
""")
        assert config.control_port == 0
        assert config.carrier("cmcc").tps == 7
        assert config.carrier("cucc").tps == 3
        assert config.carrier("cucc").port == 0
        assert config.carrier("cucc").password == "secret"

    def test_rules_mix_and_blacklist(self, tmp_path):
        """Rules, mix and blacklist are data; blacklist numbers are kept in national form."""
        config = build_config(tmp_path, """
[sim]
rules = [{suffix = "99", stat = "MK:0001"}, {suffix = "98", stat = "none"}]
mix = {DELIVRD = 9, "MI:0013" = 1}
blacklist = ["+8613512345678"]
""")
        cmcc = config.carrier("cmcc")
        assert cmcc.rules == (OutcomeRule("99", "MK:0001", "001"), OutcomeRule("98", None, "000"))
        assert {m.stat for m in cmcc.mix} == {"DELIVRD", "MI:0013"}
        assert cmcc.blacklist == frozenset({"13512345678"})

    def test_seeds_differ_per_carrier(self, tmp_path):
        """Each carrier draws from its own random stream."""
        config = build_config(tmp_path, "[sim]\nseed = 3\n")
        assert len({c.seed for c in config.carriers}) == 5


class TestErrors:
    @pytest.mark.parametrize(("toml", "expected"), [
        ("[sim]\ntps = 0\n", "sim.tps: expected a positive integer, got 0"),
        ("[sim]\nbogus = 1\n", "sim.bogus: unknown key"),
        ("[sim.carriers.xyz]\nport = 1\n", "sim.carriers.xyz: unknown carrier id"),
        ("[sim.carriers.cmcc]\nport = 70000\n", "sim.carriers.cmcc.port: expected a port number"),
        ("[sim]\nreceipt_delay_ms = [5, 1]\n", "sim.receipt_delay_ms: expected [min_ms, max_ms]"),
        ("[sim]\nrules = [{suffix = \"00\", stat = \"TOOLONGSTAT\"}]\n", "sim.rules: expected a list"),
        ("[sim]\nmix = {DELIVRD = 0}\n", "sim.mix: expected a table"),
        ("[sim.carriers.cmcc]\nport = 2776\n", "sim.carriers.cucc.port: port 2776 is also used by"),
        ("[sim\n", "TOML syntax"),
    ])
    def test_bad_values_name_file_and_key(self, tmp_path, toml, expected):
        """Every bad value gives one line naming the file and the key."""
        with pytest.raises(ConfigError) as info:
            build_config(tmp_path, toml)
        message = str(info.value)
        assert message.startswith(str(tmp_path / "sim.toml") + ": ")
        assert expected in message
        assert "\n" not in message

    def test_cli_bad_config_exits_2_with_one_line(self, tmp_path, capsys):
        """`smsc-sim run` with a bad file prints one line on stderr, no traceback, exit 2."""
        path = tmp_path / "bad.toml"
        path.write_text("[sim]\nwindow = -1\n", encoding="utf-8")
        assert main(["run", "--config", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"smsc-sim: {path}: sim.window: expected a positive integer, got -1"

    def test_cli_missing_file(self, tmp_path, capsys):
        """A config path that does not exist is a config error, not a crash."""
        assert main(["run", "--config", str(tmp_path / "nope.toml")]) == 2
        assert "cannot read" in capsys.readouterr().err

    def test_cli_help(self, capsys):
        """`smsc-sim run --help` documents --config."""
        with pytest.raises(SystemExit) as info:
            main(["run", "--help"])
        assert info.value.code == 0
        assert "--config" in capsys.readouterr().out


def test_profiles_path_is_relative_to_the_config(tmp_path: Path):
    """`profiles = "x.toml"` is read next to the config file, and its errors are config errors."""
    (tmp_path / "p.toml").write_text("[zz]\nname='x'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="zz: unknown carrier id"):
        build_config(tmp_path, "[sim]\nprofiles = \"p.toml\"\n")


def test_config_from_a_host_table():
    """A host that parsed its own file passes the [sim] table; errors still name its file."""
    from carriers.sim.config import config_from_table
    config = config_from_table({"control_port": 0, "carriers": {"cmcc": {"tps": 9}}}, "bridge.toml")
    assert config.control_port == 0 and config.carrier("cmcc").tps == 9
    with pytest.raises(ConfigError, match=r"^bridge.toml: sim.carriers.cmcc.tps: expected a positive integer"):
        config_from_table({"carriers": {"cmcc": {"tps": "fast"}}}, "bridge.toml")


def test_example_file_loads():
    """The shipped example override file is valid and means what its comments say."""
    path = Path(__file__).resolve().parents[2] / "config" / "smsc-sim.example.toml"
    config = load_config(path)
    assert config.carrier("cmcc").port == 2775
    assert {m.stat for m in config.carrier("cucc").mix} == {"DELIVRD", "MK:0001", "MI:0013"}


def test_with_ports():
    """with_ports moves every listener (0 = free port) or single carriers, leaving the rest."""
    config = load_config().with_ports(0, control_port=0, cmcc=12775)
    assert [c.port for c in config.carriers] == [12775, 0, 0, 0, 0]
    assert config.control_port == 0
    with pytest.raises(KeyError):
        load_config().with_ports(zz=1)
