"""Convert a tf_keras backbone (float, or TF-MOT QAT/PQAT-annotated) to full-integer int8 TFLite.

Int8 weights, activations, input and output (TFLITE_BUILTINS_INT8 only, so a model that cannot be
fully quantized fails here rather than on the device). The CPU model keeps a dynamic batch dimension
so the runtime can ``resize_tensor_input`` to any batch; the Edge TPU variant has a static batch of 1.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from metalite.runtime.nativelog import native_stderr_to_log

from .errors import ExportError


def is_quantize_annotated(model) -> bool:
    """True for a model made by TF-MOT ``quantize_apply`` (QAT or PQAT): it holds Quantize* layers."""
    return any(type(l).__name__.startswith("Quantize") for l in model.layers)


def input_hw(model) -> tuple:
    """(H, W, C) of the model's single image input."""
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ExportError(f"backbone input must be (H, W, C) with known sizes, got {shape}")
    return tuple(int(d) for d in shape)


def _check_representative(model, images) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != input_hw(model):
        raise ExportError(
            f"representative images must have shape (N, {', '.join(map(str, input_hw(model)))}), "
            f"got {x.shape}"
        )
    if len(x) == 0 or not np.all(np.isfinite(x)):
        raise ExportError("representative images must be a non-empty array of finite values")
    return x


def _quiet():
    """The converter prints its settings from native code; hidden unless ``--verbose``."""
    from .tfcompat import VERBOSE, native_stderr_captured

    return contextlib.nullcontext() if VERBOSE else native_stderr_captured()


def _converter(model, batch):
    from .tfcompat import tf

    if batch is None:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    # A concrete function with a fixed input signature gives static shapes everywhere (Edge TPU needs them).
    spec = tf.TensorSpec((int(batch),) + input_hw(model), tf.float32, name="image")
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    return tf.lite.TFLiteConverter.from_concrete_functions([fn], model)


def convert_int8(model, representative, batch: int | None = None) -> bytes:
    """Full-integer TFLite bytes; ``batch`` None keeps the batch dimension dynamic, 1 fixes it.

    ``representative``: float32 (N, H, W, C) model-input images used to calibrate activation ranges
    (for a QAT/PQAT model the ranges were learned, and the images only calibrate what is left).
    """
    from .tfcompat import tf

    x = _check_representative(model, representative)
    conv = _converter(model, batch)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([img[None]] for img in x)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    try:
        with (
            warnings.catch_warnings(),
            _quiet(),
        ):  # "Statistics for quantized inputs were expected" for QAT models
            warnings.simplefilter("ignore", UserWarning)
            data = conv.convert()
    except Exception as e:  # converter errors are long MLIR dumps; keep the first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"full-integer conversion failed (an op without an int8 kernel?): {first}"
        ) from e
    check_int8_io(data)
    return data


def convert_float(model) -> bytes:
    """Float32 TFLite (dynamic batch), for comparing against the int8 model only."""
    from .tfcompat import tf

    with _quiet():
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def interpreter(data: bytes, batch: int | None = None):
    """A TensorFlow ``tf.lite.Interpreter`` on ``data``, resized to ``batch`` if given, tensors allocated.

    Allocating applies the XNNPACK delegate, whose "INFO: Created ..." line goes to the runtime's log
    (``--verbose``), as on the device."""
    from .tfcompat import tf

    with warnings.catch_warnings(), native_stderr_to_log():
        warnings.simplefilter("ignore")  # the deprecation notice pointing at ai-edge-litert
        it = tf.lite.Interpreter(model_content=data)
        if batch is not None:
            d = it.get_input_details()[0]
            it.resize_tensor_input(d["index"], [int(batch)] + list(d["shape"][1:]), strict=True)
        it.allocate_tensors()
    return it


def io_details(data: bytes) -> dict:
    """Input/output shape (without batch), shape signature, dtype name and quantization of the model."""
    it = interpreter(data)

    def one(d):
        scale, zp = d["quantization"]
        return {
            "shape": [int(s) for s in d["shape"][1:]],
            "batch": int(d["shape_signature"][0]),
            "dtype": np.dtype(d["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zp)},
        }

    ins, outs = it.get_input_details(), it.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise ExportError(f"expected one input and one output, got {len(ins)} and {len(outs)}")
    return {"input": one(ins[0]), "output": one(outs[0])}


def check_int8_io(data: bytes) -> None:
    """Raise ExportError unless the model's input and output are int8 with a quantization scale."""
    io = io_details(data)
    for side in ("input", "output"):
        d = io[side]
        if d["dtype"] != "int8" or d["quantization"]["scale"] <= 0:
            raise ExportError(
                f"converted model's {side} is {d['dtype']} (scale {d['quantization']['scale']}), "
                "expected quantized int8"
            )


def run_int8(data: bytes, images: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Float embeddings of float32 model-input ``images`` through the int8 model, quantized in and dequantized
    out exactly as the device does it (``metalite.runtime.embedder.Embedder``), ``batch`` images per call."""
    from metalite.runtime.embedder import Embedder

    x = np.asarray(images, np.float32)
    return Embedder(interpreter(data), max_batch=batch or max(len(x), 1))(x)


def cosine_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Per-row cosine similarity between two embedding matrices: min and mean (1.0 = identical direction)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(
        den > 0,
        num / np.maximum(den, 1e-12),
        np.where(np.linalg.norm(a - b, axis=1) == 0, 1.0, 0.0),
    )
    return {"min": float(cos.min()), "mean": float(cos.mean()), "n": int(len(cos))}
