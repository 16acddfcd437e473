"""``plural(n, noun)``: "1 class", "2 classes" — counts in every message the kit prints."""

from __future__ import annotations


def plural(n, noun: str, nouns: str | None = None) -> str:
    """``n`` and ``noun``, pluralised unless ``n`` is 1 (``nouns`` for an irregular plural)."""
    if n == 1:
        return f"{n} {noun}"
    if nouns is None:
        nouns = noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{n} {nouns}"
