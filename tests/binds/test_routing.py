"""Routing by number segment over the real carrier profiles (carriers/profiles.toml)."""

from __future__ import annotations

import pytest

from bridge.routing import Route, Router, RoutingError, normalise
from carriers.profiles import load_profiles


@pytest.fixture(name="router", scope="module")
def _router() -> Router:
    profiles, numbering = load_profiles()
    return Router(profiles, numbering, {"13800000001": "cucc", "+8619200000001": "cmcc"})


def _mobile(prefix: str) -> str:
    return "+86" + prefix + "0" * (11 - len(prefix) - 1) + "7"


SEGMENTS = [
    # (prefix, carrier)
    ("1340", "cmcc"), ("1348", "cmcc"), ("135", "cmcc"), ("139", "cmcc"), ("147", "cmcc"),
    ("150", "cmcc"), ("172", "cmcc"), ("178", "cmcc"), ("182", "cmcc"), ("188", "cmcc"),
    ("195", "cmcc"), ("197", "cmcc"), ("198", "cmcc"), ("165", "cmcc"), ("1703", "cmcc"),
    ("1705", "cmcc"), ("1706", "cmcc"),
    ("130", "cucc"), ("132", "cucc"), ("145", "cucc"), ("155", "cucc"), ("166", "cucc"),
    ("175", "cucc"), ("186", "cucc"), ("196", "cucc"), ("167", "cucc"), ("1704", "cucc"),
    ("1707", "cucc"), ("1709", "cucc"), ("171", "cucc"),
    ("133", "ctcc"), ("1349", "ctcc"), ("149", "ctcc"), ("153", "ctcc"), ("173", "ctcc"),
    ("17400", "ctcc"), ("17405", "ctcc"), ("177", "ctcc"), ("180", "ctcc"), ("189", "ctcc"),
    ("190", "ctcc"), ("191", "ctcc"), ("193", "ctcc"), ("199", "ctcc"), ("162", "ctcc"),
    ("1700", "ctcc"), ("1701", "ctcc"), ("1702", "ctcc"),
    ("192", "cbn"),
]


class TestSegments:
    @pytest.mark.parametrize(("prefix", "carrier"), SEGMENTS)
    def test_every_segment_routes_to_its_carrier(self, router: Router, prefix: str, carrier: str) -> None:
        """Each allocated prefix, virtual operators included, reaches its host carrier."""
        number = _mobile(prefix)
        assert router.route(number) == Route(carrier, number, True)

    def test_longest_prefix_wins(self, router: Router) -> None:
        """1349 (Telecom) beats 134x (Mobile); 1704 (Unicom) sits between Mobile's 1703 and 1705."""
        assert router.route("+8613490000000").carrier == "ctcc"
        assert router.route("+8613480000000").carrier == "cmcc"
        assert router.route("+8617040000000").carrier == "cucc"
        assert router.route("+8617400000000").carrier == "ctcc"

    def test_every_profile_prefix_is_reachable(self) -> None:
        """No profile segment is shadowed by another carrier's longer prefix."""
        profiles, numbering = load_profiles()
        router = Router(profiles, numbering)
        for profile in profiles.values():
            for prefix in profile.prefixes:
                assert router.route(_mobile(prefix)).carrier == profile.id

    def test_unallocated_segment_is_an_error(self, router: Router) -> None:
        """A mainland number in no carrier's segment gets an explicit routing error."""
        with pytest.raises(RoutingError, match="no carrier for number segment"):
            router.route("+8612000000000")
        with pytest.raises(RoutingError, match="no carrier"):
            router.route("+8617410000000")  # 1741x is not 17400-17405


class TestNumberForms:
    @pytest.mark.parametrize("raw", [
        "+8613800138000", "008613800138000", "8613800138000", "13800138000",
        " 138-0013-8000 ", "+86 138 0013 8000",
    ])
    def test_accepted_spellings(self, router: Router, raw: str) -> None:
        """All documented spellings of one mainland number normalise to the same E.164."""
        assert router.route(raw) == Route("cmcc", "+8613800138000", True)

    @pytest.mark.parametrize(("raw", "reason"), [
        ("", "not a phone number"),
        ("hello", "not a phone number"),
        ("+86138abc38000", "only digits"),
        ("+123", "digits, E.164"),
        ("+1234567890123456", "digits, E.164"),
        ("+0123456789", "never starts with 0"),
        ("23800138000", "not a phone number"),
        ("+８６13800138000", "only digits"),
    ])
    def test_not_a_number(self, router: Router, raw: str, reason: str) -> None:
        """Garbage is refused with a reason, never routed."""
        with pytest.raises(RoutingError, match=reason):
            router.route(raw)

    def test_mainland_length_is_checked(self, router: Router) -> None:
        """+86 mobiles must have exactly the national length."""
        with pytest.raises(RoutingError, match="12 national digits, expected 11"):
            router.route("+86138001380001")
        with pytest.raises(RoutingError, match="10 national digits"):
            router.route("+861380013800")

    def test_normalise(self) -> None:
        """normalise() is exported for callers that only need E.164."""
        assert normalise("0044 20 7946 0000") == "+442079460000"


class TestIot:
    @pytest.mark.parametrize("national", [
        "1440" + "0" * 9, "1441" + "2" * 9, "148" + "3" * 10, "146" + "4" * 10, "1410" + "5" * 9,
    ])
    def test_iot_numbers_are_refused(self, router: Router, national: str) -> None:
        """13-digit IoT numbers are data-only: a clear routing error, not a submit."""
        with pytest.raises(RoutingError, match="IoT/data-only"):
            router.route("+86" + national)


class TestInternationalAndOverrides:
    @pytest.mark.parametrize("number", ["+14155550123", "+442079460000", "+85291234567", "0081312345678"])
    def test_outside_86_goes_to_catch_all(self, router: Router, number: str) -> None:
        """Every number outside +86 takes the country_code '*' profile."""
        route = router.route(number)
        assert route.carrier == "intl"
        assert route.mainland is False

    def test_no_catch_all_is_an_error(self) -> None:
        """Without a '*' profile a foreign number has no route."""
        profiles, numbering = load_profiles()
        del profiles["intl"]
        with pytest.raises(RoutingError, match="no carrier for this country code"):
            Router(profiles, numbering).route("+14155550123")

    def test_override_wins_over_prefix(self, router: Router) -> None:
        """A ported number follows the override table, whatever spelling the key used."""
        assert router.route("+8613800000001") == Route("cucc", "+8613800000001", True)
        assert router.route("8619200000001").carrier == "cmcc"
        assert router.route("+8613800000002").carrier == "cmcc"

    def test_bad_overrides_fail_at_construction(self) -> None:
        """A typo in the override table is a startup error, not a silent misroute."""
        profiles, numbering = load_profiles()
        with pytest.raises(ValueError, match="unknown carrier"):
            Router(profiles, numbering, {"+8613800000001": "nope"})
        with pytest.raises(ValueError, match="not a number"):
            Router(profiles, numbering, {"abc": "cmcc"})

    def test_duplicate_segment_is_refused(self) -> None:
        """Two carriers claiming one segment is a data error caught at startup."""
        import dataclasses

        profiles, numbering = load_profiles()
        profiles["cbn"] = dataclasses.replace(profiles["cbn"], prefixes=("192", "135"))
        with pytest.raises(ValueError, match="claimed by both"):
            Router(profiles, numbering)
