"""Structured pruning: remove whole convolution filters and rebuild a thinner backbone.

Unstructured sparsity makes the file smaller but no interpreter skips the zeros; a backbone with fewer
filters is faster on every backend (CPU, XNNPACK, Edge TPU) because every op is simply smaller.

The backbone is a chain (``training.models``: conv4, dsconv), so its channels form *groups*: each
Conv2D starts one (its output filters); the BatchNorm after it, a DepthwiseConv2D (per-channel) and the
next Conv2D's input axis consume it. Removing filter ``j`` of a group removes row ``j`` everywhere it
flows. The last group is the embedding and keeps its width, so the head and the device contract
(``embedding_dim``) are unchanged. The thinner backbone is rebuilt from the config (``backbone.widths``,
see ``models.conv_widths``), so ``load_model_dir`` and ``export`` rebuild it with no extra file.

Filter scores (higher = kept):

- ``bn``: |gamma| of the BatchNorm after the filter (network slimming, Liu et al. 2017): the scale the
  filter's normalized output is multiplied by.
- ``l1``: L1 norm of the filter's kernel (Li et al. 2017, "Pruning filters for efficient ConvNets").

Scope: ``layer`` removes the same fraction from every group (or, given a list, each group's own
fraction); ``global`` ranks all filters together (each score divided by its group's mean, since raw
scores are not comparable across layers) and keeps at least one filter per group in 8 (``MIN_KEEP``).

Measured on the Omniglot conv4-64 ProtoNet (Lake-style error on the held-out alphabets, 2000 paired
runs): before any fine-tuning, removing 50% by ``l1`` leaves 37% error against 47% by ``bn``; after 400
fine-tuning episodes ``l1`` is still ahead (+3.4 vs +4.2 pt over the float model) and ``global`` keeps
nearly the same widths as ``layer`` (the BatchNorm scales of a model trained without a sparsity penalty
are all close to 1), so ``l1`` / ``layer`` are the defaults.

Widths: int8 convolutions run in blocks of channels. On this x86 machine (ai-edge-litert, XNNPACK) a
conv4 with 38 or 40 filters per layer is exactly as fast as with 48 (1.6x over 64) and 32 is 2.45x:
time moves in steps of 16 channels, so ``multiple`` (``--structured-multiple``, default 16) rounds every
kept count to the nearest multiple; fewer filters than that would cost accuracy and buy no time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import CompressError

SCORES = ("bn", "l1")
SCOPES = ("layer", "global")
MIN_KEEP = 0.125


class StructuredError(CompressError):
    """Bad structured-pruning settings or a backbone it cannot thin; one line naming the problem."""


@dataclass
class Group:
    """One set of channels: made by ``conv`` (a Conv2D), normalized by ``bn``, read by ``consumers``."""

    conv: str
    bn: str | None
    width: int
    consumers: list = field(
        default_factory=list
    )  # (layer name, kind) with kind "dw", "dwbn" or "conv"


def channel_groups(backbone) -> list:
    """The channel groups of a chain backbone, in order; the last one is the embedding."""
    groups = []
    for layer in backbone.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            if groups:
                groups[-1].consumers.append((layer.name, "conv"))
            groups.append(Group(layer.name, None, int(layer.filters)))
        elif kind == "DepthwiseConv2D":
            groups[-1].consumers.append((layer.name, "dw"))
        elif kind == "BatchNormalization":
            g = groups[-1]
            if g.bn is None and not any(k == "dw" for _, k in g.consumers):
                g.bn = layer.name
            else:
                g.consumers.append((layer.name, "dwbn"))
        elif kind in ("Dense", "Conv1D", "Conv3D", "SeparableConv2D", "Add", "Concatenate"):
            raise StructuredError(
                f"structured pruning handles chains of Conv2D/DepthwiseConv2D/BatchNorm; "
                f"layer {layer.name} is a {kind}"
            )
    if len(groups) < 2:
        raise StructuredError("the backbone has fewer than two conv layers: nothing to thin")
    return groups


def filter_scores(backbone, groups, score: str) -> list:
    """One score per filter of each group except the embedding (higher = more important)."""
    if score not in SCORES:
        raise StructuredError(f"unknown filter score {score!r}; choose one of {', '.join(SCORES)}")
    out = []
    for g in groups[:-1]:
        if score == "bn":
            if g.bn is None:
                raise StructuredError(
                    f"{g.conv} has no BatchNorm after it: score 'bn' needs one (use 'l1')"
                )
            s = np.abs(backbone.get_layer(g.bn).gamma.numpy())
        else:
            k = backbone.get_layer(g.conv).kernel.numpy()
            s = np.abs(k).reshape(-1, k.shape[-1]).sum(axis=0)
        out.append(np.asarray(s, np.float64))
    return out


def parse_fractions(value) -> list | float:
    """One fraction in [0, 1), or a comma-separated list of them (one per conv layer but the last)."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        out = [float(v) for v in items]
    except ValueError:
        raise StructuredError(
            f"--structured must be a fraction or a comma-separated list of them, got {value!r}"
        ) from None
    if not out or any(not 0.0 <= f < 1.0 or math.isnan(f) for f in out):
        raise StructuredError(
            f"--structured must be in [0, 1) (fraction of filters removed), got {value}"
        )
    return out[0] if len(out) == 1 and not isinstance(value, (list, tuple)) else out


def round_width(n: int, width: int, multiple: int) -> int:
    """``n`` kept filters of ``width`` rounded to the nearest multiple of ``multiple`` (at least one multiple,
    at most ``width``, halves rounded up); layers narrower than two multiples keep ``n`` as is."""
    if multiple <= 1 or width < 2 * multiple:
        return n
    return int(min(width, max(multiple, multiple * math.floor(n / multiple + 0.5))))


def select_filters(scores: list, fraction, scope: str, multiple: int = 1) -> list:
    """Sorted indices of the filters kept in each group: ``fraction`` of them removed, or with a list, that
    layer's fraction from each layer (scope "layer" only); counts rounded by ``round_width``."""
    if scope not in SCOPES:
        raise StructuredError(f"unknown pruning scope {scope!r}; choose one of {', '.join(SCOPES)}")
    per = fraction if isinstance(fraction, (list, tuple)) else [fraction] * len(scores)
    if len(per) != len(scores):
        raise StructuredError(f"{len(per)} fractions for {len(scores)} prunable conv layers")
    if scope == "layer":
        counts = [max(1, int(round(len(s) * (1.0 - f)))) for s, f in zip(scores, per)]
    elif isinstance(fraction, (list, tuple)):
        raise StructuredError("per-layer fractions need --structured-scope layer")
    else:
        counts = _global_counts(scores, fraction)
    counts = [round_width(n, len(s), int(multiple)) for n, s in zip(counts, scores)]
    return [np.sort(np.argsort(-s, kind="stable")[:n]) for s, n in zip(scores, counts)]


def _global_counts(scores: list, fraction: float) -> list:
    """Per-group keep counts from one ranking of all filters (scores relative to their group's mean)."""
    rel = [s / (s.mean() + 1e-12) for s in scores]
    floor = [max(1, math.ceil(MIN_KEEP * len(s))) for s in scores]
    total = sum(len(s) for s in scores)
    keep_total = max(sum(floor), int(round(total * (1.0 - fraction))))
    counts = list(floor)
    # the best filters beyond each group's floor, ranked together
    extra = sorted(
        ((r[j], gi) for gi, r in enumerate(rel) for j in np.argsort(-r)[floor[gi] :]), reverse=True
    )
    for _, gi in extra[: keep_total - sum(floor)]:
        counts[gi] += 1
    return counts


def thin_weights(old, new, groups, keep: list) -> None:
    """Copy ``old``'s weights into the thinner ``new`` (same layer names), keeping filters ``keep``."""
    keep_of = {g.conv: k for g, k in zip(groups, keep + [None])}  # the embedding keeps all
    reads = {name: k for g, k in zip(groups, keep + [None]) for name, _ in g.consumers}
    bn_of = {g.bn: keep_of[g.conv] for g in groups if g.bn}
    for layer in new.layers:
        src = old.get_layer(layer.name)
        ws = [w.numpy() for w in src.weights]
        if not ws:
            continue
        kind = type(layer).__name__
        out_k, in_k = keep_of.get(layer.name), reads.get(layer.name)
        if kind == "Conv2D":
            ws[0] = _take(_take(ws[0], in_k, 2), out_k, 3)
            ws[1:] = [_take(w, out_k, 0) for w in ws[1:]]  # bias, if any
        elif kind == "DepthwiseConv2D":
            ws[0] = _take(ws[0], in_k, 2)
            ws[1:] = [_take(w, in_k, 0) for w in ws[1:]]
        elif kind == "BatchNormalization":
            ws = [_take(w, bn_of.get(layer.name, in_k), 0) for w in ws]
        layer.set_weights(ws)


def _take(a, idx, axis):
    return a if idx is None else np.take(a, idx, axis=axis)


def recalibrate_bn(backbone, images, batch: int = 128, rounds: int = 40, seed: int = 0) -> None:
    """Re-estimate every BatchNorm's moving statistics on ``images`` (training-mode forward passes, no
    gradient step): a layer whose inputs lost channels sees a new distribution, and its old statistics
    cost more accuracy than the removed filters themselves."""
    from metalite.export.tfcompat import tf

    rng = np.random.default_rng(seed)
    x = np.asarray(images, np.float32)
    for _ in range(rounds):
        backbone(
            tf.constant(x[rng.choice(len(x), min(batch, len(x)), replace=False)]), training=True
        )


def thin_backbone(
    backbone,
    backbone_cfg: dict,
    input_shape,
    fraction: float,
    score: str = "l1",
    scope: str = "layer",
    calibration=None,
    multiple: int = 1,
):
    """(thinner backbone with the kept filters' weights, its backbone config with ``widths``, summary).

    ``fraction`` of the filters of every conv layer but the embedding layer is removed (a list: one
    fraction per layer); with ``calibration`` images (model input) the BatchNorm statistics are
    re-estimated on them."""
    from .models import build_backbone, conv_widths

    fraction = parse_fractions(fraction)
    groups = channel_groups(backbone)
    before = [g.width for g in groups]
    if before != conv_widths(backbone_cfg):
        raise StructuredError(
            f"backbone widths {before} do not match its config {conv_widths(backbone_cfg)}"
        )
    scores = filter_scores(backbone, groups, score)
    keep = select_filters(scores, fraction, scope, multiple)
    widths = [len(k) for k in keep] + [before[-1]]
    cfg = {**backbone_cfg, "widths": widths}
    thin = build_backbone(cfg, tuple(input_shape))
    thin_weights(backbone, thin, groups, keep)
    if calibration is not None and widths != before:
        recalibrate_bn(thin, calibration)
    removed = int(sum(before) - sum(widths))
    summary = {
        "fraction": removed / sum(before[:-1]),
        "requested": fraction,
        "score": score,
        "scope": scope,
        "multiple": int(multiple),
        "widths_before": before,
        "widths": widths,
        "filters_removed": removed,
        "filters_prunable": int(sum(before[:-1])),
    }
    return thin, cfg, summary
