"""The device's checks of what the server answers: each answer has the shape the API promises, or the
call fails with one ``BadAnswerError`` line. Nothing the server sends is trusted to be well-formed."""

from __future__ import annotations

from ..labels import short_repr
from .errors import BadAnswerError


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def upload(answer, sent: list) -> tuple:
    """(ids to drop, stored, duplicates) from ``POST /v1/examples``; only ids of the batch ``sent`` are kept,
    so a hostile answer cannot empty the rest of the outbox."""
    if (
        not isinstance(answer, dict)
        or not isinstance(answer.get("ids"), list)
        or not _count(answer.get("stored"))
        or not _count(answer.get("duplicates"))
    ):
        raise BadAnswerError(
            f"POST /v1/examples: the server's answer is not "
            f'{{"ids": [...], "stored": n, "duplicates": n}} (got {short_repr(answer)})'
        )
    mine = set(sent)
    ids = [i for i in answer["ids"] if isinstance(i, str) and i in mine]
    return ids, min(answer["stored"], len(sent)), min(answer["duplicates"], len(sent))


def offer(answer) -> dict:
    """``GET /v1/releases/latest``: {"version", "release": str, "signature": str or None}."""
    if (
        not isinstance(answer, dict)
        or not isinstance(answer.get("release"), str)
        or not isinstance(answer.get("signature"), (str, type(None)))
    ):
        raise BadAnswerError(
            f"GET /v1/releases/latest: the server's answer is not a release offer "
            f"(got {short_repr(answer)})"
        )
    return answer


def class_list(answer) -> list:
    """``GET /v1/classes``: the list of {"name", "images", ...} objects (entries without a str name dropped)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("classes"), list):
        raise BadAnswerError(
            f'GET /v1/classes: the server\'s answer is not {{"classes": [...]}} '
            f"(got {short_repr(answer)})"
        )
    return [c for c in answer["classes"] if isinstance(c, dict) and isinstance(c.get("name"), str)]


def shared_class(answer, name) -> list:
    """``GET /v1/classes/NAME``: its list of images (each checked by the caller)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("images"), list):
        raise BadAnswerError(
            f"shared class {short_repr(name)}: the server's answer is not "
            f'{{"images": [...]}} (got {short_repr(answer)})'
        )
    return answer["images"]
