"""The base of every error metalite raises on purpose, and the one-line form errors are shown in.

Each part derives its own errors from ``MetaliteError`` and the builtin that fits (``ValueError`` mostly), so
``except MetaliteError`` catches them all and ``except ValueError`` keeps working (docs/DESIGN.md, "Errors").
"""

from __future__ import annotations


class MetaliteError(Exception):
    """Base class of every error metalite raises deliberately."""


class FileRefusedError(MetaliteError, ValueError):
    """A path metalite will not write a file to: a directory, device, FIFO or socket stands there."""


def one_line(exc: BaseException) -> str:
    """Return ``exc`` as ``"TypeName: first line of its message"`` (for wrapping errors from deep inside)."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")
