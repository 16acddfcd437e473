"""``fleet status``: the fleet at a glance, as a dict (for --json) and as text lines."""

from __future__ import annotations

import json
import time

from metalite.runtime.names import terminal_safe
from metalite.runtime.plural import plural

from . import classes, devices, examples, releases

UPDATE_LOG = (
    "updates/last.json"  # written by ``metalite fleet update``: its last decision and figures
)


def status(root) -> dict:
    """{"root", "public_key", "latest", "releases": [...], "devices": [...], "examples": {kind: n},
    "classes": the class library (``classes.listing``), "last_update": the last ``fleet update`` decision or None}."""
    rels = releases.list_releases(root)
    try:
        last = json.loads((root.path / UPDATE_LOG).read_text())
    except (OSError, ValueError):
        last = None
    return {
        "root": str(root.path),
        "public_key": root.public_key(),
        "latest": rels[-1]["version"] if rels else None,
        "releases": rels,
        "devices": devices.list_devices(root),
        "examples": examples.counts(root),
        "classes": classes.listing(root),
        "last_update": last,
    }


def gate_text(m: dict) -> str:
    """One line of an update's figures: held-out fleet data and unseen classes (paired), current -> candidate."""

    def pair(k):
        v = m.get(k) or {}
        if v.get("current") is None:
            return f"{k.replace('_', ' ')} n/a"
        return f"{k.replace('_', ' ')} {100 * v['current']:.1f}% -> {100 * v['candidate']:.1f}%"

    u = m.get("unseen")
    unseen = (
        (
            f"unseen {u['ways']}-way 1-shot {100 * u['current']:.2f}% -> {100 * u['candidate']:.2f}% "
            f"(paired {100 * u['diff']:+.2f} ± {100 * u['ci95']:.2f} pt)"
        )
        if u
        else pair("original_val")
    )
    return f"{pair('fleet_holdout')}, {unseen}"


def _ago(t, now) -> str:
    if t is None:
        return "never"
    s = max(0.0, now - t)
    return (
        f"{s:.0f} s ago"
        if s < 120
        else f"{s / 60:.0f} min ago"
        if s < 7200
        else f"{s / 3600:.1f} h ago"
    )


def status_lines(st: dict) -> list:
    """Human-readable lines of a ``status`` dict; what devices sent (class names, reasons) and notes are shown
    with control characters escaped (``runtime.names.terminal_safe``): one line each, no terminal escapes."""
    return [terminal_safe(line) for line in _lines(st)]


def _lines(st: dict) -> list:
    now = time.time()
    ex = st["examples"]
    lines = [
        f"fleet {st['root']}",
        f"public key: {st['public_key'] or '(none yet: start serve or publish)'}",
        f"latest version: {st['latest'] or '(none published)'}; examples received: "
        + (", ".join(f"{n} {k}" for k, n in sorted(ex.items())) or "none"),
    ]
    for r in st["releases"][-5:]:
        lines.append(
            f"  v{r['version']}  {time.strftime('%Y-%m-%d %H:%M', time.gmtime(r['created']))}  "
            f"{plural(r['files'], 'file')} {r['bytes'] / 1024:.0f} KiB  {r['note']}".rstrip()
        )
        if r.get("metrics") and "fleet_holdout" in r["metrics"]:
            lines.append(f"       update of v{r['metrics'].get('base')}: {gate_text(r['metrics'])}")
    if st.get("last_update"):
        u = st["last_update"]
        lines.append(f"last update: {u.get('decision')} ({u.get('reason', '')}); {gate_text(u)}")
    lib = st.get("classes") or []
    lines.append(
        f"class library: {plural(len(lib), 'shared class')}"
        + (
            ": "
            + ", ".join(
                f"{c['name']} ({plural(c['images'], 'image')}, {c['device']})" for c in lib[:10]
            )
            if lib
            else ""
        )
        + (f", … ({len(lib) - 10} more)" if len(lib) > 10 else "")
    )
    lines.append(f"devices: {len(st['devices'])}")
    for d in st["devices"]:
        state = (
            "REVOKED"
            if d["revoked"]
            else f"v{d['version']}"
            if d["version"] is not None
            else "no bundle"
        )
        last = (
            f"  last update {d['last_event']}: {d['last_reason'] or 'ok'}"
            if d["last_event"]
            else ""
        )
        lines.append(
            f"  {d['name']:<20} {state:<10} seen {_ago(d['last_seen'], now):<12} "
            f"examples {d['examples']:<6} outbox {d['pending'] if d['pending'] is not None else '?'}{last}"
        )
    return lines
