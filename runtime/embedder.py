"""Run the quantized backbone: float model input in, dequantized float32 embeddings out.

One interpreter per ``Embedder``, created once. A model with a dynamic batch dimension is run in chunks
of ``max_batch`` images; the input is resized (``resize_tensor_input`` + ``allocate_tensors``) only when
the chunk size changes. A model with a static batch (the Edge TPU's batch 1) is run in a loop, the last
chunk zero-padded.
"""

from __future__ import annotations

import threading

import numpy as np

from .errors import BundleError, InputError


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Return ``round(x / scale) + zero_point`` clipped to ``dtype``'s range, as ``dtype`` (TFLite's rule)."""
    info = np.iinfo(dtype)
    # one float32 scratch array updated by ufuncs in place: at batch 1, temporaries and np.clip's Python
    # dispatch cost more than the arithmetic
    q = np.divide(np.asarray(x, np.float32), np.float32(scale))
    np.rint(q, out=q)  # half to even, as np.round
    np.add(q, np.float32(zero_point), out=q)
    np.maximum(q, np.float32(info.min), out=q)
    np.minimum(q, np.float32(info.max), out=q)
    return q.astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Return ``scale * (q - zero_point)`` as float32."""
    out = np.asarray(q).astype(np.float32)
    np.subtract(out, np.float32(zero_point), out=out)
    np.multiply(out, np.float32(scale), out=out)
    return out


class Embedder:
    """Runs a backbone interpreter on batches of model input.

    Args:
      interpreter: an allocated TFLite ``Interpreter`` with one input (N, H, W, C) and one output (N, D).
      max_batch: images per ``invoke`` for a dynamic-batch model (default 32).
      name: file name for error messages.

    Attributes:
      input_shape: (H, W, C); embedding_dim: D; dynamic_batch: bool;
      input_quantization / output_quantization: (scale, zero_point) read from the interpreter;
      invocations: number of ``invoke()`` calls so far; resizes: number of input resizes so far.
    """

    def __init__(self, interpreter, max_batch: int = 32, name: str = "backbone.tflite"):
        self.interpreter = interpreter
        self.name = name
        self.max_batch = max(1, int(max_batch))
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(
                f"{name}: expected 1 input and 1 output tensor, found {len(inputs)} and {len(outputs)}"
            )
        self._in, self._out = inputs[0], outputs[0]
        shape = [int(s) for s in self._in["shape"]]
        sig = [int(s) for s in self._in.get("shape_signature", shape)]
        if len(shape) != 4:
            raise BundleError(f"{name}: input must be (N, H, W, C), got shape {shape}")
        self.input_shape = tuple(shape[1:])
        self.dynamic_batch = sig[0] == -1
        self._batch = shape[0]
        self.in_dtype = np.dtype(self._in["dtype"])
        self.out_dtype = np.dtype(self._out["dtype"])
        self.input_quantization = self._quant(self._in, "input")
        self.output_quantization = self._quant(self._out, "output")
        out_shape = [int(s) for s in self._out["shape"]]
        self.embedding_dim = int(np.prod(out_shape[1:]))
        self.invocations = 0
        self.resizes = 0
        self._lock = threading.Lock()

    def _quant(self, detail, which):
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            return None
        scale, zp = detail["quantization"]
        if not scale > 0:
            raise BundleError(f"{self.name}: {which} is {dtype} but has no quantization parameters")
        return float(scale), int(zp)

    def _set_batch(self, n: int) -> None:
        if n != self._batch:
            idx = self._in["index"]
            self.interpreter.resize_tensor_input(idx, [n, *self.input_shape], strict=True)
            self.interpreter.allocate_tensors()
            self._batch = n
            self.resizes += 1

    def _run(self, q: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in["index"], q)
        self.interpreter.invoke()
        self.invocations += 1
        return self.interpreter.get_tensor(self._out["index"]).reshape(len(q), -1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Embed model input.

        Args:
          x: float32 (N, H, W, C) model input (as ``preprocess.to_model_input`` makes it).
        Returns:
          float32 (N, embedding_dim), dequantized.
        Raises:
          InputError: ``x`` has the wrong shape.
        """
        x = np.asarray(x, np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise InputError(
                f"model input must have shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}"
            )
        n = len(x)
        if n == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        q = (
            x
            if self.input_quantization is None
            else quantize(x, *self.input_quantization, self.in_dtype)
        )
        with self._lock:
            step = self.max_batch if self.dynamic_batch else self._batch
            if n == step or (
                self.dynamic_batch and n < step
            ):  # one invoke: its output is the result
                self._set_batch(n)
                out = self._run(q)
            else:
                out = self._chunked(q, step)
        if self.output_quantization is None:
            return out.astype(np.float32, copy=False)
        return dequantize(out, *self.output_quantization)

    def _chunked(self, q: np.ndarray, step: int) -> np.ndarray:
        """Raw outputs of ``q`` run ``step`` images per invoke (the last chunk resized, or zero-padded)."""
        n = len(q)
        out = np.empty((n, self.embedding_dim), self.out_dtype)
        for start in range(0, n, step):
            chunk = q[start : start + step]
            if self.dynamic_batch:
                self._set_batch(len(chunk))
                out[start : start + len(chunk)] = self._run(chunk)
            else:
                pad = self._batch - len(chunk)
                if pad:
                    chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
                out[start : start + self._batch - pad] = self._run(chunk)[: self._batch - pad]
        return out
