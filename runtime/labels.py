"""The label rule: a class label is a ``str`` or an ``int``; nothing else is accepted.

``bool`` is refused (``True == 1`` would merge two classes), numpy integer and string scalars become
plain ``int``/``str`` (so labels compare, hash and save as the user expects), subclasses of str/int
(enums) become their plain value. Floats, ``None``, tuples, bytes and the rest are refused when a class
is learned (``fit``/``add_class``), not later when the state is saved.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

LABEL_TYPES = (str, int)


def short_repr(x, limit: int = 60) -> str:
    """``repr(x)`` cut to about ``limit`` characters (labels may be arbitrarily long)."""
    r = repr(x)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def normalize_label(label):
    """Return ``label`` as a plain ``str`` or ``int``.

    Raises:
      InputError: one line naming the label and its type, when it is not a str or an int (or is a bool).
    """
    if isinstance(label, np.generic):
        label = label.item()
    if isinstance(label, bool):
        raise InputError(
            f"label {label!r} is a bool; labels must be str or int (True would be the same class as 1)"
        )
    if isinstance(label, str):
        return str.__str__(label)
    if isinstance(label, int):
        return int(label)
    raise InputError(
        f"label {short_repr(label)} is a {type(label).__name__}; labels must be str or int"
    )


def preview(labels, k: int = 5) -> str:
    """The first ``k`` labels and how many there are, for error messages (never all 10,000 of them)."""
    shown = ", ".join(short_repr(l, 30) for l in labels[:k])
    more = f", … ({len(labels)} classes)" if len(labels) > k else ""
    return f"[{shown}{more}]"
