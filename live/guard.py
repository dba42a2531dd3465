"""Private-trading guard (私下交易): normalise text and detect off-platform steering.

Pure domain logic: no Redis, no HTTP. Chat, card titles and usernames call
``Guard.check_or_raise``; see ``docs/guard.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from live.errors import Blocked


@dataclass(frozen=True)
class Finding:
    """Why a text was refused."""

    reason: str  # "private_trading" | "banned_word"
    kind: str  # detector name, e.g. "cn_mobile", "wechat", "qq", "url", "steering"
    match: str  # the normalised fragment that triggered it


class Guard:
    """Detects private-trading attempts and banned words in short user texts."""

    def __init__(self, banned_words: Iterable[str] = ()) -> None:
        self._banned = tuple(w.lower() for w in banned_words if w)

    def normalise(self, text: str) -> str:
        """The canonical form every detector sees (digits folded, junk removed)."""
        return text.lower()

    def check(self, text: str) -> Finding | None:
        """The first finding in ``text``, or ``None`` when it is clean."""
        norm = self.normalise(text)
        for word in self._banned:
            if word in norm:
                return Finding("banned_word", "banned_word", word)
        return None

    def check_or_raise(self, text: str) -> None:
        """Raise ``Blocked(reason=...)`` when ``text`` is not clean."""
        found = self.check(text)
        if found is not None:
            raise Blocked(reason=found.reason)
