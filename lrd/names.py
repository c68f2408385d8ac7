"""Looking up a name a user typed: one message for an unknown name, with a suggestion."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def unknown_name_message(name: str, known: Iterable[str], imports_hint: str | None = None) -> str:
    """ "unknown name 'lsmt'; allowed: gru, lstm, rnn (did you mean 'lstm'?)".

    With ``imports_hint`` (what registers names of one's own, e.g. ``imports = ["my_task.py"]``),
    a name close to no built-in one is taken for a user's own and the message says how to load it.
    """
    known = list(known)
    hint = did_you_mean(name, known)
    if not hint and imports_hint:
        hint = f"; a name of your own is registered by its file: {imports_hint}"
    return f"unknown name {name!r}; allowed: {', '.join(sorted(known))}{hint}"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the closest of ``known``, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
