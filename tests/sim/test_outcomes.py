"""Outcome rules: blacklist, suffix rules, seeded mix, registered_delivery semantics."""

from __future__ import annotations

import pytest

from carriers.sim.outcomes import OutcomeEngine, receipt_requested
from carriers.sim.stat import default_err, is_success, message_state

from .helpers import build_config


@pytest.fixture(name="cmcc")
def _cmcc(tmp_path):
    return build_config(tmp_path, "[sim]\nblacklist = [\"13900004444\"]\n").carrier("cmcc")


class TestRules:
    @pytest.mark.parametrize(("number", "stat", "err"), [
        ("13800000000", "UNDELIV", "005"),
        ("13800001111", None, "000"),
        ("13800002222", "REJECTD", "008"),
        ("13800003333", "MK:0024", "024"),
        ("13800005678", "DELIVRD", "000"),
    ])
    def test_suffix_rules(self, cmcc, number, stat, err):
        """Recipient suffixes 0000/1111/2222/3333 pick UNDELIV/no receipt/REJECTD/MK:0024."""
        outcome = OutcomeEngine(cmcc).decide(number)
        assert (outcome.stat, outcome.err) == (stat, err)

    def test_blacklist_wins_in_any_number_form(self, cmcc):
        """A blacklisted number gets MBBLACK whether written national, 86... or +86..."""
        engine = OutcomeEngine(cmcc)
        for form in ("13900004444", "8613900004444", "+8613900004444"):
            assert engine.decide(form).stat == "MBBLACK"
            assert engine.decide(form).reason == "blacklist"

    def test_delay_within_profile_range(self, cmcc):
        """Receipt delays stay inside receipt_delay_ms."""
        engine = OutcomeEngine(cmcc)
        delays = {engine.decide("13812345678").delay_ms for _ in range(200)}
        assert min(delays) >= 20 and max(delays) <= 200 and len(delays) > 10


class TestMix:
    def test_seeded_mix_is_reproducible(self, tmp_path):
        """Same seed, same sequence of outcomes; reset() replays it."""
        config = build_config(tmp_path, "[sim]\nseed = 5\nmix = {DELIVRD = 1, UNDELIV = 1, \"MK:0001\" = 1}\n")
        engine = OutcomeEngine(config.carrier("cucc"))
        first = [engine.decide("13012345678").stat for _ in range(50)]
        assert set(first) == {"DELIVRD", "UNDELIV", "MK:0001"}
        again = OutcomeEngine(config.carrier("cucc"))
        assert [again.decide("13012345678").stat for _ in range(50)] == first
        engine.reset()
        assert [engine.decide("13012345678").stat for _ in range(50)] == first

    def test_mix_weights(self, tmp_path):
        """A 9:1 mix gives roughly nine successes per failure."""
        config = build_config(tmp_path, "[sim]\nmix = {DELIVRD = 9, UNDELIV = 1}\n")
        engine = OutcomeEngine(config.carrier("ctcc"))
        stats = [engine.decide("13312345678").stat for _ in range(2000)]
        assert 0.05 < stats.count("UNDELIV") / 2000 < 0.15


class TestRegisteredDelivery:
    @pytest.mark.parametrize(("rd", "stat", "wanted"), [
        (0, "DELIVRD", False), (0, "UNDELIV", False),
        (1, "DELIVRD", True), (1, "MK:0024", True),
        (2, "DELIVRD", False), (2, "UNDELIV", True), (2, "MBBLACK", True),
        (3, "UNDELIV", False),
        (0x11, "DELIVRD", True),  # SME-ack bits do not hide the SMSC receipt bits
        (1, None, False),
    ])
    def test_semantics(self, rd, stat, wanted):
        """0 never, 1 always, 2 failures only; an outcome without stat never."""
        assert receipt_requested(rd, stat) is wanted


class TestStatTable:
    @pytest.mark.parametrize(("stat", "state"), [
        ("DELIVRD", 2), ("EXPIRED", 3), ("DELETED", 4), ("UNDELIV", 5), ("ACCEPTD", 6),
        ("UNKNOWN", 7), ("REJECTD", 8), ("MK:0024", 5), ("MI:0013", 3), ("DB:0141", 8),
        ("ID:0076", 8), ("MBBLACK", 8), ("HD:0001", 8), ("ZZ:0001", 7), ("WHAT", 7),
    ])
    def test_message_state(self, stat, state):
        """Standard stats and carrier code families map to SMPP message_state values."""
        assert message_state(stat) == state

    def test_success_and_err(self):
        """Only delivered-like stats count as success; failures never carry err 000."""
        assert is_success("DELIVRD") and not is_success("MK:0024")
        assert default_err("MK:0024") == "024"
        assert default_err("REJECTD") == "008"
        assert default_err("DELIVRD") == "000"
