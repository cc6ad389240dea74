"""Unsubscribe keyword matching for uplink (MO) replies.

Sending to a user who unsubscribed is the most serious violation the platform
lists, and "Thanks" must not unsubscribe anyone, so a reply matches only when the
whole of it is a keyword once normalised: NFKC (full-width letters and digits fold
to ASCII), case-folded, and stripped of surrounding blanks, punctuation (ASCII and
CJK, e.g. ``。！，``), symbols (emoji) and invisible format characters (zero-width
space, BOM). Symbols are trimmed too because ``T😊`` still means "stop"; a missed
unsubscribe costs far more than a spurious one. Nothing inside the reply is removed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

__all__ = ["DEFAULT_KEYWORDS", "UnsubscribeMatcher", "normalize_reply"]

DEFAULT_KEYWORDS: tuple[str, ...] = ("T", "R", "TD", "N", "0000", "退订")

# Unicode general categories trimmed from both ends: separators, punctuation,
# symbols, control and format characters.
_TRIM_CATEGORIES = frozenset({
    "Zs", "Zl", "Zp",
    "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po",
    "Sm", "Sc", "Sk", "So",
    "Cc", "Cf",
})


def _trimmable(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in _TRIM_CATEGORIES


def normalize_reply(text: str) -> str:
    """The reply as compared with keywords: NFKC, case-folded, ends trimmed."""
    # NFKC again after casefold: case folding can leave text that NFKC would still change.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    start, end = 0, len(folded)
    while start < end and _trimmable(folded[start]):
        start += 1
    while end > start and _trimmable(folded[end - 1]):
        end -= 1
    return folded[start:end]


class UnsubscribeMatcher:
    """Decides whether an MO reply is an unsubscribe request; keywords come from config."""

    __slots__ = ("_keywords",)

    def __init__(self, keywords: Iterable[str] = DEFAULT_KEYWORDS) -> None:
        normalized = set()
        for keyword in keywords:
            norm = normalize_reply(keyword)
            if not norm:
                raise ValueError(f"unsubscribe keyword {keyword!r} is empty once normalised")
            normalized.add(norm)
        if not normalized:
            raise ValueError("at least one unsubscribe keyword is required")
        self._keywords = frozenset(normalized)

    @property
    def keywords(self) -> frozenset[str]:
        """The normalised keywords, as compared."""
        return self._keywords

    def matches(self, text: str) -> bool:
        """True when the whole reply, normalised, is one of the keywords."""
        return normalize_reply(text) in self._keywords
