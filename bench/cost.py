"""Compute cost of a backbone: multiply-accumulates (MACs) per image, and the GMAC/s a timing achieves.

MACs count the convolution and fully connected layers only (everything else is a rounding error
next to them); a zero weight still counts, because no interpreter skips it: only removing filters
(structured pruning) lowers this number.
"""

from __future__ import annotations

import numpy as np


def tflite_macs(data: bytes, what: str = "model") -> int:
    """MACs per image of a .tflite model, from its op and tensor shapes (batch dimension dropped)."""
    from metalite.export.flatbuf import read_model

    m = read_model(data, what)
    total = 0
    for op in m.ops:
        if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(op.inputs) < 2:
            continue
        w = m.tensors[op.inputs[1]].shape
        out = m.tensors[op.outputs[0]].shape
        if op.name == "CONV_2D":  # weights (Cout, kh, kw, Cin), output (N, H, W, Cout)
            total += int(np.prod(out[1:])) * int(np.prod(w[1:]))
        elif (
            op.name == "DEPTHWISE_CONV_2D"
        ):  # weights (1, kh, kw, C), one kh*kw filter per output channel
            total += int(np.prod(out[1:])) * int(w[1] * w[2])
        else:  # weights (out, in), per input row
            total += int(np.prod(w))
    return total


def keras_macs(model) -> int:
    """MACs per image of a tf_keras chain of Conv2D / DepthwiseConv2D / Dense layers."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense"):
            continue
        out = [int(d) for d in layer.output_shape[1:]]
        k = (layer.depthwise_kernel if kind == "DepthwiseConv2D" else layer.kernel).shape
        if kind == "Conv2D":
            total += int(np.prod(out)) * int(k[0] * k[1] * k[2])
        elif kind == "DepthwiseConv2D":
            total += int(np.prod(out)) * int(k[0] * k[1])
        else:
            total += int(k[0] * k[1])
    return total


def gmacs_per_s(macs: int | None, ms_per_image: float | None) -> float | None:
    """Achieved billions of MACs per second at ``ms_per_image``."""
    if not macs or not ms_per_image:
        return None
    return macs / (ms_per_image * 1e-3) / 1e9
