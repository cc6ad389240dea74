"""Tests for bridge.unsubscribe: which MO replies are unsubscribe requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.unsubscribe import DEFAULT_KEYWORDS, UnsubscribeMatcher, normalize_reply


@pytest.fixture(name="matcher", scope="module")
def _matcher() -> UnsubscribeMatcher:
    return UnsubscribeMatcher()


class TestUnsubscribeMatcher:
    @pytest.mark.parametrize(
        "reply",
        [
            "T", "t", " R ", "r", "TD", "td", "Td", "N", "n", "0000", "退订",
            "ＴＤ", "ｔｄ", "Ｔ", "００００", "Ｎ",           # full-width folded
            "T.", "T!", "T。", "退订！", "退订。", "，退订，", "【退订】", "「TD」",
            "(R)", "\"N\"", "'T'", "T...", "TD?", "T～",
            "\tT\r\n", "\u3000退订\u3000", "\u00a0R\u00a0",  # tab, ideographic and no-break spaces
            "\u200bT\ufeff",                               # zero-width space, BOM
            "T😊", "👍 0000",
        ],
    )
    def test_matches(self, matcher: UnsubscribeMatcher, reply: str) -> None:
        """A reply that is exactly a keyword, once folded and trimmed, unsubscribes."""
        assert matcher.matches(reply)

    @pytest.mark.parametrize(
        "reply",
        [
            "TT", "T please", "0001", "Thanks", "", " ", "。", "TD TD", "T D", "退 订",
            "退", "订", "No", "Nope", "STOP", "T1", "1T", "00000", "000", "R2", "退订吧",
            "请退订", "TDX", "ＴＴ",
        ],
    )
    def test_does_not_match(self, matcher: UnsubscribeMatcher, reply: str) -> None:
        """Anything beyond a bare keyword is an ordinary reply, so "Thanks" unsubscribes nobody."""
        assert not matcher.matches(reply)

    def test_custom_keywords(self) -> None:
        """The keyword list is configuration; custom words are folded the same way."""
        matcher = UnsubscribeMatcher(["stop", "退訂"])
        assert matcher.matches(" STOP! ")
        assert matcher.matches("退訂")
        assert not matcher.matches("T")

    def test_keywords_normalised(self) -> None:
        """Configured keywords are stored folded, as they are compared."""
        assert UnsubscribeMatcher(["ＴＤ ", "Stop."]).keywords == frozenset({"td", "stop"})

    @pytest.mark.parametrize("keywords", [[""], [" 。"], []])
    def test_empty_keyword_rejected(self, keywords: list[str]) -> None:
        """A keyword that trims to nothing (or no keyword at all) is a config error."""
        with pytest.raises(ValueError):
            UnsubscribeMatcher(keywords)

    def test_default_list(self) -> None:
        """The defaults are the platform's: T, R, TD, N, 0000 and 退订."""
        assert DEFAULT_KEYWORDS == ("T", "R", "TD", "N", "0000", "退订")


_WRAP = st.text(alphabet=" \t\u3000.,!?;:。！，、？；：…()（）【】「」\"'~-", max_size=6)


class TestProperties:
    @settings(max_examples=200, deadline=None)
    @given(keyword=st.sampled_from(DEFAULT_KEYWORDS), before=_WRAP, after=_WRAP, upper=st.booleans())
    def test_wrapped_keyword_matches(self, keyword: str, before: str, after: str, upper: bool) -> None:
        """Any keyword in any case wrapped in blanks and punctuation unsubscribes."""
        word = keyword.upper() if upper else keyword.lower()
        assert UnsubscribeMatcher().matches(before + word + after)

    @settings(max_examples=200, deadline=None)
    @given(keyword=st.sampled_from(DEFAULT_KEYWORDS), extra=st.sampled_from("xqZ9中a"), front=st.booleans())
    def test_keyword_plus_word_character_does_not_match(self, keyword: str, extra: str, front: bool) -> None:
        """A keyword with a letter, digit or ideograph attached is not an unsubscribe."""
        reply = extra + keyword if front else keyword + extra
        assert not UnsubscribeMatcher().matches(reply)

    @settings(max_examples=200, deadline=None)
    @given(text=st.text(max_size=20))
    def test_normalize_is_idempotent(self, text: str) -> None:
        """Normalising twice changes nothing, so stored keywords and replies compare alike."""
        once = normalize_reply(text)
        assert normalize_reply(once) == once
