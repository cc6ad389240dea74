"""The operator console in a real browser against a real daemon and its simulator."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.e2e.harness import CHANNEL, OPERATOR_TOKEN, Bridge, Receiver, wait_for


def _open(page: Page, bridge: Bridge, token: str | None = OPERATOR_TOKEN) -> None:
    page.goto(f"{bridge.api}/console" + (f"#token={token}" if token else ""))


def _signed_in(page: Page) -> None:
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#signin")).to_be_hidden()
    expect(page.locator("#binds tbody tr")).to_have_count(5)


class TestSignIn:
    def test_nothing_renders_without_the_token(self, page: Page, bridge: Bridge) -> None:
        """Without a token, or with a wrong one, the page shows only the sign-in form and fetches no data."""
        data_calls: list[str] = []
        page.on("request", lambda r: data_calls.append(r.url) if "/v1/" in r.url else None)
        _open(page, bridge, token=None)
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#app")).to_be_hidden()
        assert data_calls == []
        page.fill("#token-input", "not-the-token")
        page.click("#signin button[type=submit]")
        expect(page.locator("#signin-error")).to_contain_text("refused")
        expect(page.locator("#app")).to_be_hidden()
        assert page.locator("#binds tbody tr").count() == 0
        assert page.locator("#backlog .tile").count() == 0
        assert page.evaluate("sessionStorage.length") == 0
        page.fill("#token-input", OPERATOR_TOKEN)
        page.click("#signin button[type=submit]")
        _signed_in(page)

    def test_fragment_token_signs_in_and_leaves_the_url(self, page: Page, bridge: Bridge) -> None:
        """/console#token=... signs in; the token leaves the address bar and never reaches the server."""
        seen: list[str] = []
        page.on("request", lambda r: seen.append(r.url))
        _open(page, bridge)
        _signed_in(page)
        assert "token" not in page.url
        assert not any(OPERATOR_TOKEN in url for url in seen)
        assert page.evaluate("localStorage.length") == 0
        page.click("#signout")
        expect(page.locator("#app")).to_be_hidden()
        assert page.locator("#binds tbody tr").count() == 0


class TestBinds:
    def test_every_bind_appears_with_its_state(self, page: Page, bridge: Bridge) -> None:
        """Every bind of the daemon is listed, bound, with its carrier and window."""
        _open(page, bridge)
        _signed_in(page)
        rows = page.locator("#binds tbody tr")
        carriers = sorted(rows.nth(i).locator("td").first.inner_text() for i in range(5))
        assert carriers == ["cbn", "cmcc", "ctcc", "cucc", "intl"]
        expect(page.locator("#binds tbody .state-bound")).to_have_count(5)
        expect(page.locator("#tile-queued b")).to_have_text("0")
        shot = os.environ.get("CONSOLE_SCREENSHOT")
        if shot:
            _traffic_for_screenshot(page, bridge, Path(shot))


class TestLookup:
    def test_sent_message_by_id_and_by_number(self, page: Page, bridge: Bridge, receiver: Receiver) -> None:
        """A sent message is found by smsMsgId and by number, with its segments, receipt and report."""
        number = "+8613812347001"
        mid = bridge.send([number])["result"][0]["smsMsgId"]
        wait_for(lambda: receiver.reports_for(mid), what="the report")
        carrier_id = bridge.message(mid)["segments"][0]["carrierMessageId"]
        _open(page, bridge)
        _signed_in(page)

        page.fill("#lookup-input", mid)
        page.click("#lookup button[type=submit]")
        facts = page.locator("#message-facts")
        expect(facts).to_contain_text("DELIVRD")
        expect(page.locator("#message")).to_contain_text(carrier_id)
        expect(page.locator("#message")).to_contain_text("applied")      # the matched receipt
        expect(page.locator("#message")).to_contain_text("acked")        # the report push
        to = facts.locator("button.num")
        expect(to).to_have_text("+86*******7001")                        # masked like the logs
        assert number not in page.locator("body").inner_text()
        to.click()
        expect(to).to_have_text(number)                                  # unmasked on request

        page.fill("#lookup-input", number)
        page.click("#lookup button[type=submit]")
        expect(page.locator("#lookup-table tbody tr")).to_have_count(1)
        page.click(f"#lookup-table button.link:has-text('{mid}')")
        expect(page.locator("#message-facts")).to_contain_text(mid)
        expect(page.locator("#message-facts")).to_contain_text(CHANNEL)  # channel numbers are not masked


class TestBlacklist:
    def test_entry_is_removed_from_the_console(self, page: Page, bridge: Bridge) -> None:
        """A "T" reply's blacklist entry is listed masked and removed with its button."""
        number = "+8613812347002"
        status, _ = bridge.sim("POST", "/mo", {"carrier": "cmcc", "from": number[1:], "to": CHANNEL, "text": "T"})
        assert status == 200
        wait_for(lambda: _blacklisted(bridge, number), what="the blacklist entry")
        _open(page, bridge)
        _signed_in(page)
        rows = page.locator("#blacklist tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("+86*******7002")
        rows.first.locator("button.remove").click()
        expect(page.locator("#blacklist tbody")).to_contain_text("the blacklist is empty")
        assert not _blacklisted(bridge, number)


class TestDeadPushes:
    def test_dead_report_is_replayed(self, page: Page, make_bridge: Callable[..., Bridge],
                                     receiver: Receiver) -> None:
        """A dead-lettered report is listed and, replayed once the receiver is back, acknowledged."""
        bridge = make_bridge(callback_max_age_s=0.5)
        receiver.status = 500
        mid = bridge.send(["+8613812347003"])["result"][0]["smsMsgId"]
        wait_for(lambda: _dead(bridge), what="the dead letter")
        receiver.status = 200
        _open(page, bridge)
        _signed_in(page)
        rows = page.locator("#dead tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(mid)
        rows.first.locator("button.replay").click()
        wait_for(lambda: receiver.reports_for(mid), what="the replayed report")
        expect(page.locator("#dead tbody")).to_contain_text("no dead-lettered pushes")
        assert bridge.message(mid)["reported"] is True


def _blacklisted(bridge: Bridge, number: str) -> bool:
    status, _ = bridge.request("GET", f"{bridge.api}/v1/blacklist/{CHANNEL}/{number}", token=OPERATOR_TOKEN)
    return status == 200


def _dead(bridge: Bridge) -> list[dict]:
    status, answer = bridge.request("GET", f"{bridge.api}/v1/outbox/dead", token=OPERATOR_TOKEN)
    assert status == 200
    return answer["dead"]


def _traffic_for_screenshot(page: Page, bridge: Bridge, path: Path) -> None:
    """For the README only (CONSOLE_SCREENSHOT=docs/console.png): some traffic, then a picture."""
    for i in range(40):
        bridge.send([f"+86138123{i:05d}", f"+86139123{i:05d}", f"+86133123{i:05d}"])
        page.wait_for_timeout(250)
    page.fill("#lookup-input", "+8613812300007")
    page.click("#lookup button[type=submit]")
    page.locator("#lookup-table button.link").first.click()
    expect(page.locator("#message-facts")).to_be_visible()
    page.wait_for_timeout(2500)
    page.screenshot(path=str(path), full_page=True)


