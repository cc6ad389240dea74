"""Tests for bridge.receipts.StatusMap and carriers/receipt_codes.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.receipts import (
    DEFAULT_RECEIPT_CODES_PATH,
    MESSAGE_STATE_STATS,
    MappedStatus,
    Receipt,
    StatusMap,
    StatusMapError,
    parse_receipt,
)
from carriers.profiles import load_profiles


@pytest.fixture(name="status_map", scope="module")
def _status_map() -> StatusMap:
    return StatusMap.load()


def _receipt(stat: str, err: str = "", state: int | None = None) -> Receipt:
    return Receipt(
        message_id="1", stat=stat, err=err, message_state=state,
        submit_date="", done_date="", text="", source="text",
    )


# Every family and code of the CARRIERS.md table, with its final class.
FAMILIES = [
    ("MA:0054", "UNDELIV"),
    ("MB:0065", "UNDELIV"),
    ("MB:1077", "UNDELIV"),
    ("MC:0055", "EXPIRED"),
    ("MI:0013", "EXPIRED"),
    ("MI:0024", "EXPIRED"),
    ("MI:0029", "EXPIRED"),
    ("MK:0001", "UNDELIV"),
    ("MK:0002", "UNDELIV"),
    ("MK:0024", "UNDELIV"),
    ("MN:0001", "UNDELIV"),
    ("CA:0001", "UNDELIV"),
    ("CB:0007", "UNDELIV"),
    ("DA:0001", "REJECTD"),
    ("DB:0141", "REJECTD"),
    ("DB:0142", "REJECTD"),
    ("DB:0143", "REJECTD"),
    ("DB:0144", "REJECTD"),
    ("IA:0001", "REJECTD"),
    ("IB:0008", "REJECTD"),
    ("IC:0001", "REJECTD"),
    ("ID:0076", "REJECTD"),
    ("BLACK", "REJECTD"),
    ("HD:0001", "REJECTD"),
    ("DISTURB", "REJECTD"),
]


class TestCarrierCodes:
    @pytest.mark.parametrize(("stat", "status"), FAMILIES)
    def test_family(self, status_map: StatusMap, stat: str, status: str) -> None:
        """Each carrier family of CARRIERS.md maps to its final class, raw code kept."""
        assert status_map.map(_receipt(stat)) == MappedStatus(status, stat, True)

    def test_mbblack_passes_through(self, status_map: StatusMap) -> None:
        """MBBLACK is reported as itself, as the platform does, not as REJECTD."""
        assert status_map.map(_receipt("MBBLACK", "000")) == MappedStatus("MBBLACK", "MBBLACK", True)
        assert "MBBLACK" in status_map.pass_through

    def test_exact_beats_family(self, status_map: StatusMap) -> None:
        """MBBLACK is an exact code, so the MB family (UNDELIV) does not claim it."""
        custom = StatusMap.loads(
            DEFAULT_RECEIPT_CODES_PATH.read_text(encoding="utf-8").replace(
                'pass_through = ["MBBLACK"]', "pass_through = []"
            )
        )
        assert custom.map(_receipt("MBBLACK")).status == "REJECTD"

    def test_code_beats_message_state(self, status_map: StatusMap) -> None:
        """A carrier code in the text stat wins over a generic message_state TLV."""
        mapped = status_map.map(_receipt("DB:0141", "", 2))
        assert (mapped.status, mapped.final) == ("REJECTD", True)

    def test_case_and_blanks(self, status_map: StatusMap) -> None:
        """Codes match whatever their case and padding; org_code keeps them as written."""
        mapped = status_map.map(_receipt(" mk:0024\x00"))
        assert (mapped.status, mapped.org_code) == ("UNDELIV", "mk:0024\x00")

    def test_unknown_family_member(self, status_map: StatusMap) -> None:
        """HD is not a family: only HD:0001 is a blacklist code, others are unknown."""
        assert status_map.map(_receipt("HD:0002")) == MappedStatus("UNDELIV", "HD:0002", True)

    @pytest.mark.parametrize("carrier", ["cmcc", "cucc", "ctcc", "cbn", "intl"])
    def test_profile_failure_codes_are_known(self, carrier: str) -> None:
        """Every failure code a carrier profile (so the simulator) emits is in the table, not defaulted."""
        text = DEFAULT_RECEIPT_CODES_PATH.read_text(encoding="utf-8")
        # A code the table knows maps the same whatever the default for unknown codes is.
        maps = [StatusMap.loads(text.replace('default_status = "UNDELIV"', f'default_status = "{d}"'))
                for d in ("UNDELIV", "DELIVRD")]
        for code in load_profiles()[0][carrier].failure_codes:
            first, second = (m.map(_receipt(code)) for m in maps)
            assert first == second, code
            assert first.final and first.status != "DELIVRD", code


class TestStandardStats:
    @pytest.mark.parametrize(
        ("stat", "status"),
        [
            ("DELIVRD", "DELIVRD"),
            ("EXPIRED", "EXPIRED"),
            ("UNDELIV", "UNDELIV"),
            ("REJECTD", "REJECTD"),
            ("DELETED", "UNDELIV"),
            ("UNKNOWN", "UNDELIV"),
            ("DELIVERED", "DELIVRD"),
            ("UNDELIVERABLE", "UNDELIV"),
            ("REJECTED", "REJECTD"),
            ("delivrd", "DELIVRD"),
        ],
    )
    def test_final(self, status_map: StatusMap, stat: str, status: str) -> None:
        """Standard Appendix B words and their long forms map to final statuses."""
        assert status_map.map(_receipt(stat)) == MappedStatus(status, stat, True)

    @pytest.mark.parametrize("stat", ["ENROUTE", "ACCEPTD", "enroute"])
    def test_intermediate(self, status_map: StatusMap, stat: str) -> None:
        """ENROUTE and ACCEPTD are not final: the real outcome is still to come."""
        mapped = status_map.map(_receipt(stat))
        assert (mapped.status, mapped.final) == (stat.upper(), False)

    @pytest.mark.parametrize("stat", ["FOOBAR", "XX:0001", "", "DELIV"])
    def test_unknown_is_undeliv_raw_kept(self, status_map: StatusMap, stat: str) -> None:
        """An unknown stat is a final UNDELIV, never a guessed delivery, and stays raw."""
        assert status_map.map(_receipt(stat, "007")) == MappedStatus("UNDELIV", f"{stat}/007", True)


class TestMessageState:
    @pytest.mark.parametrize(
        ("state", "status", "final"),
        [
            (1, "ENROUTE", False),
            (2, "DELIVRD", True),
            (3, "EXPIRED", True),
            (4, "UNDELIV", True),
            (5, "UNDELIV", True),
            (6, "ACCEPTD", False),
            (7, "UNDELIV", True),
            (8, "REJECTD", True),
        ],
    )
    def test_tlv_only(self, status_map: StatusMap, state: int, status: str, final: bool) -> None:
        """A TLV-only receipt maps through its message_state."""
        r = parse_receipt({"receipted_message_id": "1", "message_state": state})
        mapped = status_map.map(r)
        assert (mapped.status, mapped.final) == (status, final)
        assert mapped.org_code == MESSAGE_STATE_STATS[state]

    def test_tlv_beats_standard_text(self, status_map: StatusMap) -> None:
        """When text and TLV disagree on a standard word, the TLV wins (SMPP: prefer TLVs)."""
        mapped = status_map.map(_receipt("DELIVRD", "", 5))
        assert (mapped.status, mapped.org_code) == ("UNDELIV", "DELIVRD")

    def test_tlv_beats_garbage_text(self, status_map: StatusMap) -> None:
        """An unreadable text stat does not hide a clear message_state."""
        assert status_map.map(_receipt("D?LIV", "", 2)).status == "DELIVRD"

    def test_unlisted_state(self, status_map: StatusMap) -> None:
        """An unlisted message_state with no text is a final UNDELIV and says which state."""
        r = parse_receipt({"receipted_message_id": "1", "message_state": 9})
        assert status_map.map(r) == MappedStatus("UNDELIV", "message_state:9", True)

    def test_table_agrees_with_protocol_names(self) -> None:
        """The TOML's message_state words are the ones parse_receipt uses for TLV-only receipts."""
        import tomllib

        raw = tomllib.loads(DEFAULT_RECEIPT_CODES_PATH.read_text(encoding="utf-8"))
        assert {int(k): v for k, v in raw["message_state"].items()} == dict(MESSAGE_STATE_STATS)


class TestOrgCode:
    @pytest.mark.parametrize(
        ("stat", "err", "org_code"),
        [
            ("DELIVRD", "", "DELIVRD"),
            ("DELIVRD", "000", "DELIVRD"),
            ("DELIVRD", "0", "DELIVRD"),
            ("UNDELIV", "3:000", "UNDELIV"),
            ("UNDELIV", "3:013", "UNDELIV/3:013"),
            ("MK:0024", "024", "MK:0024/024"),
            ("MK:0024", "", "MK:0024"),
            ("UNDELIV", " 013 ", "UNDELIV/013"),
        ],
    )
    def test_format(self, status_map: StatusMap, stat: str, err: str, org_code: str) -> None:
        """org_code is the stat alone when err is empty or all zeros, else stat/err."""
        assert status_map.map(_receipt(stat, err)).org_code == org_code

    def test_from_network_error_code(self, status_map: StatusMap) -> None:
        """A TLV-only receipt's network_error_code shows as <type>:<code> in org_code."""
        r = parse_receipt({"receipted_message_id": "1", "message_state": 5,
                           "network_error_code": b"\x01\x01\x2c"})
        assert status_map.map(r).org_code == "UNDELIV/1:300"


BASE = """
default_status = "UNDELIV"
pass_through = ["MBBLACK"]
intermediate = ["ENROUTE"]
[standard]
DELIVRD = "DELIVRD"
[exact]
MBBLACK = "REJECTD"
[families]
MK = "UNDELIV"
[message_state]
1 = "ENROUTE"
2 = "DELIVRD"
"""


class TestLoad:
    def test_default_file_loads(self) -> None:
        """The shipped table loads and passes MBBLACK through by default."""
        assert StatusMap.load().pass_through == frozenset({"MBBLACK"})

    def test_path_argument(self, tmp_path: Path) -> None:
        """An operator's own table can replace the shipped one."""
        path = tmp_path / "codes.toml"
        path.write_text(BASE.replace('MK = "UNDELIV"', 'MK = "EXPIRED"'), encoding="utf-8")
        assert StatusMap.load(path).map(_receipt("MK:0024")).status == "EXPIRED"

    def test_default_status_configurable(self) -> None:
        """The class for unknown codes is data too."""
        custom = StatusMap.loads(BASE.replace('default_status = "UNDELIV"', 'default_status = "EXPIRED"'))
        assert custom.map(_receipt("ZZZ")).status == "EXPIRED"

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (('MK = "UNDELIV"', 'MK = "LOST"'), r"families\.MK: 'LOST'"),
            (('MK = "UNDELIV"', 'MKX = "UNDELIV"'), "families.MKX: a family is two letters"),
            (('pass_through = ["MBBLACK"]', 'pass_through = ["NOPE"]'), "pass_through: 'NOPE'"),
            (('intermediate = ["ENROUTE"]', 'intermediate = ["ENROUTE", "DELIVRD"]'), "DELIVRD also listed"),
            (('2 = "DELIVRD"', '2 = "WHAT"'), "message_state.2"),
            (('2 = "DELIVRD"', 'two = "DELIVRD"'), "message_state.two: not an integer"),
            (('default_status = "UNDELIV"', 'default_status = "ENROUTE"'), "default_status"),
            (('MBBLACK = "REJECTD"', 'MBBLACK = 3'), r"\[exact\]: expected a table of strings"),
            (('intermediate = ["ENROUTE"]', 'intermediate = "ENROUTE"'), "intermediate: expected a list"),
            (('[standard]', '[standard'), "<string>"),
        ],
    )
    def test_bad_table(self, change: tuple[str, str], message: str) -> None:
        """A bad table fails at load with the key at fault, not at the first receipt."""
        with pytest.raises(StatusMapError, match=message):
            StatusMap.loads(BASE.replace(*change))

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing table file is a StatusMapError naming the path."""
        with pytest.raises(StatusMapError, match="nope.toml"):
            StatusMap.load(tmp_path / "nope.toml")
