"""Reading a ``metalite bench`` report: nested fields that may be missing, their ratios, numbers as text.

Every section's writers read the report through these, so a figure that was not measured comes out as
None (or "n/a"), never as an error or a blank."""

from __future__ import annotations


def get(d, *path):
    """``d[p0][p1]...`` or None if any step is missing."""
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def ratio(a, b):
    return a / b if a and b else None


def f(x, fmt="{:.2f}"):
    return "n/a" if x is None else fmt.format(x)


def kib(n):
    return "n/a" if n is None else f"{n / 1024:.1f} KiB"
