"""The headline of a ``metalite bench`` report: the figures report.md, the README and the CLI lead with.

Every value is None when one side of it was not measured; the writers then leave the line out (and
the report lists why the variant is missing) rather than print a blank.
"""
from __future__ import annotations

METHODS = {"metalite": "metalite runtime", "tflite_odt": "TFLite on-device training",
           "keras_finetune": "Keras fine-tuning", "pycoral_sgd": "pycoral-style SGD"}
BACKEND = "ai_edge_litert"  # the headline interpreter, 1 thread


def get(d, *path):
    """``d[p0][p1]...`` or None if any step is missing."""
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def ratio(a, b):
    return a / b if a and b else None


def shipped(report) -> str | None:
    """The variant that is the bundle's own backbone.tflite."""
    avail = get(report, "variants", "available") or {}
    for k in ("int8_pruned_tflite", "int8_tflite"):
        if k in avail and (avail[k].get("source") or "").startswith("bundle"):
            return k
    return None


def label(report, key) -> str:
    return get(report, "variants", "available", key, "label") or key


def _latency(h, report, ship) -> None:
    lat = report.get("latency") or {}
    for b in (1, 32):
        cell = get(lat, "tflite", ship, BACKEND, f"b{b}_t1") or {}
        q = cell.get("median_ms")
        h[f"int8_ms_b{b}"], h[f"int8_gmacs_b{b}"] = q, cell.get("gmacs_per_s")
        for ref in ("float_tflite", "int8_tflite"):
            s = get(cell, "speedup_vs", ref) or {}
            h[f"speedup_vs_{ref}_b{b}"] = s.get("median")
            h[f"speedup_vs_{ref}_b{b}_iqr"] = [s["q1"], s["q3"]] if s else None
            h[f"{ref}_ms_b{b}"] = get(lat, "tflite", ref, BACKEND, f"b{b}_t1", "median_ms")
        for call in ("direct", "predict", "tffunction"):
            k = get(lat, "keras", "results", f"{call}_b{b}", "median_ms")
            h[f"keras_{call}_ms_b{b}"] = k
            h[f"keras_{call}_over_int8_latency_b{b}"] = ratio(k, q)


def _size(h, report, ship) -> None:
    size = report.get("size") or {}
    h["int8_bytes"], h["int8_gzip_bytes"] = get(size, ship, "bytes"), get(size, ship, "gzip_bytes")
    h["int8_macs"] = get(size, ship, "macs")
    for ref in ("float_tflite", "int8_tflite"):
        h[f"{ref}_bytes"], h[f"{ref}_macs"] = get(size, ref, "bytes"), get(size, ref, "macs")
        h[f"{ref}_over_int8_size"] = ratio(h[f"{ref}_bytes"], h["int8_bytes"]) if ref != ship else None


def _accuracy(h, report, ship) -> None:
    acc = get(report, "accuracy", "results") or {}
    for v in (ship, "float_keras", "float_tflite", "int8_tflite"):
        for key in ("5way1shot", "20way1shot"):
            m = get(acc, v, key, "mean")
            if m is not None:
                h[f"acc_{v}_{key}"] = m


def _adaptation(h, report) -> None:
    for key, res in (get(report, "adaptation", "settings") or {}).items():
        me = get(res, "metalite", "total_ms")
        for m in ("tflite_odt", "keras_finetune", "pycoral_sgd"):
            h[f"adapt_{key}_{m}_over_metalite"] = ratio(get(res, m, "total_ms"), me)
        h[f"adapt_{key}_metalite_ms"] = me


def headline(report) -> dict:
    """The ratios report.md and the README lead with (None where a side is missing)."""
    ship = shipped(report)
    h = {"shipped_variant": ship, "shipped_label": label(report, ship) if ship else None,
         "busy_warning": get(report, "latency", "load", "warning")}
    _latency(h, report, ship)
    _size(h, report, ship)
    _accuracy(h, report, ship)
    _adaptation(h, report)
    front = get(report, "pareto", "front") or {}
    h["pareto"] = front or None
    h["pareto_best"] = pareto_best(report)
    return h


def pareto_best(report) -> dict | None:
    """The fastest Pareto bundle that meets the goal (else the one with the largest speed-up at the least
    error cost, flagged ``meets_goal`` False): label, speed-up, paired error difference and its CI."""
    points = (get(report, "pareto", "points") or [])[1:]  # the first is the reference itself
    if not points:
        return None
    ok = [p for p in points if p.get("meets_goal")]
    p = (max(ok, key=lambda q: q["b1_t1"]["speedup"]["median"]) if ok
         else min(points, key=lambda q: q["error_diff"] / max(q["b1_t1"]["speedup"]["median"] - 1, 1e-3)))
    return {"label": p["label"], "speedup_b1": p["b1_t1"]["speedup"]["median"], "error": p["error"],
            "error_diff": p["error_diff"], "error_diff_ci95": p["error_diff_ci95"], "meets_goal": bool(p.get("meets_goal")),
            "reference": get(report, "pareto", "reference"), "protocol": get(report, "pareto", "protocol"),
            "runs": get(report, "pareto", "runs"), "kib": p["bytes"] / 1024}
