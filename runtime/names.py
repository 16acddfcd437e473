"""The naming rules the device, the exporter and the fleet server share: class names, bundle file names,
and text from elsewhere shown on a terminal.

- A **class name** (a str label that travels through the fleet: shared classes, labels of uploaded
  examples) is 1-200 characters, not only blanks, every character printable (``str.isprintable``: no
  control, format, surrogate, separator other than the space, or unassigned characters), so it
  round-trips through URLs, JSON, SQLite and a terminal unchanged.
- A **bundle file name** is a plain name of letters, digits, ``.``, ``_`` and ``-`` (not starting with a
  dot), at most 128 characters, and not one of ``RESERVED_FILE_NAMES``: the files a device home keeps
  next to a verified bundle (a bundle listing ``state.npz`` would have its verified file overwritten).
- ``terminal_safe(text)`` shows device-supplied text with control characters escaped.
"""

from __future__ import annotations

import re

MAX_CLASS_NAME = 200
RESERVED_FILE_NAMES = frozenset({"release.json", "release.sig", "state.npz"})
_BUNDLE_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def class_name_problem(name) -> str | None:
    """Why ``name`` cannot name a class in the fleet, or None if it can."""
    if not isinstance(name, str):
        return f"a class name must be a string, got {type(name).__name__}"
    if not name or len(name) > MAX_CLASS_NAME:
        return f"a class name must be a non-empty string of at most {MAX_CLASS_NAME} characters, got {len(name)}"
    if not name.strip():
        return "a class name must not be only blanks"
    if not name.isprintable():
        bad = next(c for c in name if not c.isprintable())
        return (
            f"a class name must be printable; it holds {ascii(bad)} at position {name.index(bad)}"
        )
    return None


def bundle_file_problem(name) -> str | None:
    """Why ``name`` cannot be the name of a file in a bundle, or None if it can."""
    if not isinstance(name, str) or not _BUNDLE_FILE.fullmatch(name):
        return (
            f"bundle file name {terminal_safe(str(name))[:80]!r} is not 1-128 letters, digits, '.', '_' or '-' "
            "(not starting with '.')"
        )
    if name in RESERVED_FILE_NAMES:
        return f"bundle file name {name!r} is reserved for the device home ({', '.join(sorted(RESERVED_FILE_NAMES))})"
    return None


def terminal_safe(text) -> str:
    """``text`` with every non-printable character (newline, escape, bidi control, ...) shown as an escape."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in s)
