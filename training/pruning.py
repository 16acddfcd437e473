"""TF-MOT on a backbone: magnitude pruning, pruning-preserving QAT (PQAT), and the float twin of a QAT model.

- ``prune_wrap`` wraps every Conv2D/DepthwiseConv2D/Dense kernel in ``prune_low_magnitude`` (the caller
  drives the schedule with ``set_pruning_step``, or passes ``PruningSchedule`` hooks to the loop);
  ``finish_pruning`` applies the masks, so the kernels hold exact zeros, and strips the wrappers.
- ``quantize_pqat``: ``quantize_annotate_model`` + ``quantize_apply`` with
  ``Default8BitPrunePreserveQuantizeScheme``; the sparsity masks come from the kernels' exact zeros.
- ``float_twin``: a plain float backbone with a QAT model's trained weights (masks applied, no fake
  quantization): what ``backbone.tflite`` approximates, in float32.
- ``weight_report``: per weight tensor of a plain backbone, its size and exact-zero sparsity.
"""

from __future__ import annotations

import numpy as np

from .loop import Hooks

PRUNABLE = ("Conv2D", "DepthwiseConv2D", "Dense")


def _tfmot():
    import tensorflow_model_optimization as tfmot

    from metalite.export.tfcompat import tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF-MOT imports keras)

    return tfmot


def is_prunable(layer) -> bool:
    """Only convolution/dense kernels are pruned (BatchNorm, pooling etc. stay dense)."""
    return type(layer).__name__ in PRUNABLE


def _kernel_names(layer) -> list:
    return ["depthwise_kernel"] if type(layer).__name__ == "DepthwiseConv2D" else ["kernel"]


def pruning_schedule(sparsity: float, steps: int):
    """PolynomialDecay from 0 to ``sparsity`` over the first ~2/3 of ``steps`` (the rest fine-tunes with the
    final mask). ``end_step`` is a multiple of ``frequency`` so the last mask update hits the target."""
    tfmot = _tfmot()
    steps = max(int(steps), 1)
    end = max(1, (2 * steps) // 3)
    freq = max(1, end // 10)
    end = max(freq, (end // freq) * freq)
    return tfmot.sparsity.keras.PolynomialDecay(
        0.0, float(sparsity), begin_step=0, end_step=end, power=3, frequency=freq
    )


def prune_wrap(backbone, sparsity: float, steps: int):
    """The backbone with its Conv2D/DepthwiseConv2D/Dense layers wrapped by ``prune_low_magnitude``.

    The wrapped model *shares* layers (and weights) with ``backbone``; after ``finish_pruning`` the
    original ``backbone`` object holds the pruned weights."""
    from metalite.export.tfcompat import keras

    tfmot = _tfmot()
    schedule = pruning_schedule(sparsity, steps)

    def clone(layer):
        if is_prunable(layer):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    model = keras.models.clone_model(backbone, clone_function=clone)
    set_pruning_step(model, 0)
    return model


def _prune_wrappers(model):
    _tfmot()
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (
        PruneLowMagnitude,
    )

    return [l for l in model.layers if isinstance(l, PruneLowMagnitude)]


def set_pruning_step(model, step: int) -> None:
    """Drive the pruning step ourselves (what ``UpdatePruningStep`` does in ``fit``): the wrappers
    increment it on every training call and update masks when the schedule says so; setting it per outer
    step keeps the schedule in outer steps even when a learner calls the backbone several times."""
    for w in _prune_wrappers(model):
        w.pruning_step.assign(int(step))


class PruningSchedule(Hooks):
    """Hooks for ``loop.run_episodes``: TF-MOT's pruning step follows the outer step (``set_pruning_step``)."""

    def __init__(self, wrapped):
        self.wrapped = wrapped

    def before_step(self, step: int) -> None:
        set_pruning_step(self.wrapped, step)


def finish_pruning(model):
    """Apply the masks to the weights (so they hold exact zeros) and strip the wrappers."""
    tfmot = _tfmot()
    for w in _prune_wrappers(model):
        w.pruning_obj.weight_mask_op()
    return tfmot.sparsity.keras.strip_pruning(model)


def quantize_pqat(float_backbone):
    """quantize_annotate_model + quantize_apply with the pruning-preserving 8-bit scheme. The sparsity
    masks are computed here from the exact zeros of ``float_backbone``'s kernels."""
    tfmot = _tfmot()
    annotated = tfmot.quantization.keras.quantize_annotate_model(float_backbone)
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    with tfmot.quantization.keras.quantize_scope():
        return tfmot.quantization.keras.quantize_apply(annotated, scheme)


def qat_effective_kernels(model) -> dict:
    """{layer name: kernel as the quantized forward pass sees it (kernel * sparsity mask)} of a PQAT model."""
    out = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        if inner is None or not is_prunable(inner):
            continue
        wv = getattr(layer, "_weight_vars", None) or []
        for weight, _quantizer, qvars in wv:
            k = weight.numpy()
            mask = qvars.get("sparsity_mask") if isinstance(qvars, dict) else None
            out[inner.name] = k * (mask.numpy() if mask is not None else 1.0)
    return out


def float_twin(qat_model, float_backbone):
    """``float_backbone`` (a fresh plain backbone of the same architecture) given ``qat_model``'s trained
    weights: each layer's own weights, kernels with their sparsity masks applied. Returns it."""
    kernels = qat_effective_kernels(qat_model)
    for target in float_backbone.layers:
        if not target.weights:
            continue
        wrapper = qat_model.get_layer(
            f"quant_{target.name}"
        )  # QuantizeWrapper: owns the layer's weights
        own = {
            w.name.split(":")[0]: w.numpy()
            for w in wrapper.weights
            if w.name.startswith(f"{target.name}/")
        }
        if target.name in kernels:
            own[f"{target.name}/{_kernel_names(target)[0]}"] = kernels[target.name]
        target.set_weights([own[w.name.split(":")[0]] for w in target.weights])
    return float_backbone


def weight_report(float_backbone) -> list:
    """Per weight tensor of a plain (stripped) backbone: name, shape, #weights, exact-zero sparsity, pruned?"""
    rows = []
    for layer in float_backbone.layers:
        prunable = set(_kernel_names(layer)) if is_prunable(layer) else set()
        for w in layer.weights:
            a = w.numpy()
            short = w.name.split("/")[-1].split(":")[0]
            rows.append(
                {
                    "name": f"{layer.name}/{short}",
                    "shape": list(a.shape),
                    "weights": int(a.size),
                    "zeros": int(np.sum(a == 0)),
                    "sparsity": float(np.mean(a == 0)) if a.size else 0.0,
                    "pruned": short in prunable,
                    "trainable": bool(w.trainable),
                }
            )
    return rows
