"""Looking up a name a user typed: one message for an unknown name, with a suggestion."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def unknown_name_message(name: str, known: Iterable[str]) -> str:
    """ "unknown name 'lsmt'; allowed: gru, lstm, rnn (did you mean 'lstm'?)"."""
    return f"unknown name {name!r}; allowed: {', '.join(sorted(known))}{did_you_mean(name, known)}"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the closest of ``known``, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
