"""Platform rules from config: template class, exempt numbers, frequency limits for +86 only."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from bridge.config import BridgeConfig, load_config
from bridge.encoder import ConcatRefCounter
from bridge.finaliser import Finaliser
from bridge.intake import IntakeError, IntakeService
from bridge.models import NewMessage
from bridge.routing import Router
from bridge.rules import FrequencyLimiter
from bridge.store import Store, result_of
from bridge.store.sqlite import open_sqlite
from carriers.profiles import load_profiles

NOW = 1_800_000_000.0

CONFIG = """
[rules]
quiet_hours = ["00:00", "00:00"]
exempt_numbers = [{exempt}]
{extra}

[carriers.cmcc]
[carriers.intl]

[[apps]]
id = "a"
token = "t"

[[channels]]
number = "10690001"
signature = "HUAWEI"
app = "a"

[[templates]]
id = "notice"
text = "Your parcel ${{NUM_6}} has shipped"
class = "notification"

[[templates]]
id = "code"
text = "Your code is ${{NUM_6}}"
class = "otp"
"""


def _config(tmp_path: Path, exempt: str = "", extra: str = "") -> BridgeConfig:
    path = tmp_path / "bridge.toml"
    path.write_text(CONFIG.format(exempt=exempt, extra=extra), encoding="utf-8")
    return load_config(path)


@pytest.fixture(name="clock")
def _clock() -> Clock:
    clock = Clock()
    clock.advance(NOW)
    return clock


@pytest.fixture(name="store")
def _store(clock: Clock) -> Store:
    return open_sqlite(":memory:", clock=clock, commit_interval_s=0.005)[0]


def _sent(store: Store, recipient: str, count: int) -> None:
    result_of(store.messages.insert([
        NewMessage(id=f"{recipient}-{i}", app_id="a", channel="10690001", recipient=recipient, carrier="cmcc",
                   klass="otp", text="t", content_hash=f"c{i}", status_callback="", extend="",
                   created_at=NOW - 10, state="queued", status=None, org_code=None, release_at=None,
                   segments=(), counted=True)
        for i in range(count)]))


def _history(store: Store, recipient: str) -> list:
    return result_of(store.messages.recent_sends([recipient], NOW - 86_400))


def _intake(cfg: BridgeConfig, store: Store) -> IntakeService:
    profiles, numbering = load_profiles()
    return IntakeService(cfg, store, Router(profiles, numbering), Finaliser(store, now=lambda: NOW),
                         clock_now=lambda: NOW)


class TestTemplateClass:
    def test_contradicting_request_class_is_refused(self, tmp_path: Path, store: Store) -> None:
        """A notification template sent with "class": "otp" is a 400 naming the field."""
        intake = _intake(_config(tmp_path), store)
        body = {"from": "10690001", "to": ["+8613812345678"], "templateId": "notice",
                "templateParas": ["123456"], "class": "otp"}
        with pytest.raises(IntakeError) as info:
            intake.validate(_config(tmp_path).apps["a"], body)
        assert info.value.code == "E200003"
        assert info.value.description.startswith("class: ")

    @pytest.mark.parametrize(("template", "given", "expected"), [
        ("notice", None, "notification"),
        ("notice", "notification", "notification"),
        ("code", None, "otp"),
        ("code", "otp", "otp"),
    ])
    def test_template_class_decides(self, tmp_path: Path, store: Store, template: str,
                                    given: str | None, expected: str) -> None:
        cfg = _config(tmp_path)
        body = {"from": "10690001", "to": ["+8613812345678"], "templateId": template, "templateParas": ["123456"]}
        if given is not None:
            body["class"] = given
        assert _intake(cfg, store).validate(cfg.apps["a"], body).klass == expected


class TestFrequencyScope:
    def test_exempt_number_from_config_matches_request_form(self, tmp_path: Path, store: Store) -> None:
        """"13812343004" in config exempts +8613812343004, the form requests are stored in."""
        cfg = _config(tmp_path, exempt='"13812343004"')
        _sent(store, "+8613812343004", 20)
        limiter = FrequencyLimiter(cfg.rules.exempt_numbers)
        assert limiter.check("+8613812343004", "new", NOW, _history(store, "+8613812343004")) is None

    def test_limits_apply_to_mainland_only_by_default(self, tmp_path: Path, store: Store) -> None:
        """PLATFORM_RULES defines the limits for the Chinese mainland; +1 is not limited."""
        cfg = _config(tmp_path)
        _sent(store, "+8613812345678", 15)
        _sent(store, "+14155550100", 15)
        limiter = FrequencyLimiter(cfg.rules.exempt_numbers,
                                   limit_international=cfg.rules.limit_international)
        assert limiter.check("+8613812345678", "new", NOW, _history(store, "+8613812345678")).org_code == "SC:LIMIT1M"
        assert limiter.check("+14155550100", "new", NOW, _history(store, "+14155550100")) is None

    def test_limit_international_switch(self, tmp_path: Path, store: Store) -> None:
        cfg = _config(tmp_path, extra="limit_international = true")
        _sent(store, "+14155550100", 15)
        limiter = FrequencyLimiter(cfg.rules.exempt_numbers,
                                   limit_international=cfg.rules.limit_international)
        assert limiter.check("+14155550100", "new", NOW, _history(store, "+14155550100")).org_code == "SC:LIMIT1M"

    def test_intake_does_not_limit_international(self, tmp_path: Path, store: Store, clock: Clock) -> None:
        """Through the intake: the 16th message in a minute to +1 is accepted, to +86 it is LIMIT."""
        cfg = _config(tmp_path)
        _sent(store, "+8613812345678", 15)
        _sent(store, "+14155550100", 15)
        submitted = _intake(cfg, store).submit(cfg.apps["a"], {
            "from": "10690001", "to": ["+8613812345678", "+14155550100"], "body": "hello"})
        clock.advance(0.01)   # the group commit that answers the request
        accepted = result_of(submitted)
        finals = {mid: v.org_code for mid, v in accepted.finals}
        by_number = {m.recipient: finals.get(m.id) for m in accepted.messages}
        assert by_number == {"+8613812345678": "SC:LIMIT1M", "+14155550100": None}


class _CountingRefs(ConcatRefCounter):
    def __init__(self) -> None:
        super().__init__()
        self.taken: list[str] = []

    def next(self, destination: str, bits: int) -> int:
        self.taken.append(destination)
        return super().next(destination, bits)


class TestEncodingPerRequest:
    NUMBERS = ["+8613812340001", "+8613812340002", "+8613812340003"]

    def _accept(self, tmp_path: Path, store: Store, text: str) -> tuple[_CountingRefs, list[list[bytes]]]:
        cfg = _config(tmp_path)
        profiles, numbering = load_profiles()
        refs = _CountingRefs()
        intake = IntakeService(cfg, store, Router(profiles, numbering), Finaliser(store, now=lambda: NOW),
                               clock_now=lambda: NOW, refs=refs)
        d = intake.submit(cfg.apps["a"], {"from": "10690001", "to": self.NUMBERS, "body": text})
        store.flush()
        accepted = result_of(d)
        parts = [[s.short_message for s in m.segments] for m in accepted.messages]
        return refs, parts

    def test_a_one_part_text_is_encoded_once_for_every_recipient(self, tmp_path: Path, store: Store,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
        import bridge.intake

        calls: list[str] = []
        real = bridge.intake.encode_message

        def counting(text: str, **kw: object) -> object:
            calls.append(str(kw["destination"]))
            return real(text, **kw)

        monkeypatch.setattr(bridge.intake, "encode_message", counting)
        refs, parts = self._accept(tmp_path, store, "短信" * 10)
        assert calls == self.NUMBERS[:1] and refs.taken == []
        assert len(parts) == 3 and parts[0] == parts[1] == parts[2] and len(parts[0]) == 1

    def test_a_long_text_takes_a_reference_per_recipient(self, tmp_path: Path, store: Store) -> None:
        """Each recipient's parts carry a reference of its own destination's counter."""
        refs, parts = self._accept(tmp_path, store, "长短信" * 40)
        assert refs.taken == self.NUMBERS
        assert [len(p) for p in parts] == [2, 2, 2]
