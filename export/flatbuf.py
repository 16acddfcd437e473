"""Read a .tflite flatbuffer into Python objects: ops, tensors, constant buffers.

Uses the generated TFLite schema module an installed package ships: ai-edge-litert's (so a device with the
recommended interpreter inspects bundles without TensorFlow), else TensorFlow's. It is loaded from its file,
so neither package is imported (inspecting a bundle takes milliseconds, not the seconds a TF import costs);
only the ``flatbuffers`` package, a dependency of both, is needed at run time. tflite-runtime ships no schema.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from metalite.runtime.errors import MissingExtraError

from .errors import ExportError

_NUMPY_TYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "INT32": np.int32,
    "UINT8": np.uint8,
    "INT64": np.int64,
    "INT16": np.int16,
    "INT8": np.int8,
    "FLOAT64": np.float64,
    "UINT32": np.uint32,
}


# Where each package keeps the generated schema module, in the order they are tried.
SCHEMA_FILES = {
    "ai_edge_litert": ("schema_py_generated.py",),
    "tensorflow": ("lite", "python", "schema_py_generated.py"),
}


def schema_file(package: str) -> str | None:
    """Path of ``package``'s generated TFLite schema module, or None when the package or the file is absent."""
    try:
        spec = importlib.util.find_spec(package)  # locates the package without importing it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = os.path.join(root, *SCHEMA_FILES[package])
        if os.path.isfile(path):
            return path
    return None


@lru_cache(maxsize=1)
def schema():
    """The generated TFLite schema module of the first package in ``SCHEMA_FILES`` that ships one."""
    for package in SCHEMA_FILES:
        path = schema_file(package)
        if path is not None:
            mspec = importlib.util.spec_from_file_location(
                f"_metalite_tflite_schema_{package}", path
            )
            mod = importlib.util.module_from_spec(mspec)
            mspec.loader.exec_module(mod)
            return mod
    raise MissingExtraError("ai-edge-litert", "litert")


def _enum_names(cls) -> dict:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class Tensor:
    index: int
    name: str
    dtype: str  # schema TensorType name: INT8, INT32, FLOAT32, ...
    shape: list
    shape_signature: list  # -1 marks a dynamic dimension
    constant: bool  # backed by data in the file (weights, biases, shape constants)
    scale: list
    zero_point: list
    data: np.ndarray | None  # the constant's values, else None


@dataclass
class Op:
    index: int
    name: str  # builtin operator name (CONV_2D, ...) or the custom code
    inputs: list  # tensor indices (-1 = optional input absent)
    outputs: list
    options: object  # the builtin options object (schema *T class) or None


@dataclass
class TFLiteModel:
    tensors: list
    ops: list  # in execution order (the order of the main subgraph's operator list)
    inputs: list
    outputs: list
    n_subgraphs: int


def read_model(data: bytes, what: str = "model") -> TFLiteModel:
    """Parse the main subgraph of a .tflite buffer; ``what`` names the file in errors."""
    s = schema()
    try:
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ValueError("missing the TFL3 identifier")
        m = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as e:  # flatbuffers raises assorted errors on garbage
        raise ExportError(f"{what}: not a valid .tflite file ({e})") from None
    types = _enum_names(s.TensorType)
    ops_names = _enum_names(s.BuiltinOperator)
    g = m.subgraphs[0]
    tensors = []
    for i, t in enumerate(g.tensors):
        buf = m.buffers[t.buffer] if m.buffers and t.buffer < len(m.buffers) else None
        raw = None if buf is None else buf.data
        if (
            buf is not None and raw is None and getattr(buf, "size", 0)
        ):  # large models keep data outside
            raw = bytes(data[buf.offset : buf.offset + buf.size])
        dtype = types.get(t.type, str(t.type))
        arr = None
        if raw is not None and len(raw) and dtype in _NUMPY_TYPES:
            arr = np.frombuffer(bytes(bytearray(raw)), dtype=_NUMPY_TYPES[dtype])
            shape = [int(d) for d in (t.shape if t.shape is not None else [])]
            if int(np.prod(shape)) == arr.size:
                arr = arr.reshape(shape)
        q = t.quantization
        tensors.append(
            Tensor(
                i,
                (t.name or b"").decode() if isinstance(t.name, bytes) else str(t.name),
                dtype,
                [int(d) for d in (t.shape if t.shape is not None else [])],
                [
                    int(d)
                    for d in (
                        t.shapeSignature
                        if t.shapeSignature is not None
                        else (t.shape if t.shape is not None else [])
                    )
                ],
                raw is not None and len(raw) > 0,
                [float(x) for x in (q.scale if q is not None and q.scale is not None else [])],
                [
                    int(x)
                    for x in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])
                ],
                arr,
            )
        )
    ops = []
    for i, o in enumerate(g.operators or []):
        code = m.operatorCodes[o.opcodeIndex]
        num = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = ops_names.get(num, f"BUILTIN_{num}")
        if name == "CUSTOM":
            cc = code.customCode
            name = "CUSTOM:" + (cc.decode() if isinstance(cc, bytes) else str(cc))
        ops.append(
            Op(
                i,
                name,
                [int(x) for x in (o.inputs if o.inputs is not None else [])],
                [int(x) for x in (o.outputs if o.outputs is not None else [])],
                o.builtinOptions,
            )
        )
    return TFLiteModel(
        tensors, ops, [int(x) for x in g.inputs], [int(x) for x in g.outputs], len(m.subgraphs)
    )


def activation_name(options) -> str:
    """Name of an op's fused activation (NONE, RELU, RELU6, ...), or NONE if it has none."""
    code = getattr(options, "fusedActivationFunction", 0) or 0
    return _enum_names(schema().ActivationFunctionType).get(code, str(code))
