"""Edge TPU: a compatibility report of a .tflite (per op: Edge TPU or CPU, and why) and the compiler call.

The rules are those of coral.ai, "TensorFlow models on the Edge TPU" (model requirements and the
supported-operations table): 8-bit tensors, sizes and parameters constant at compile time, tensors of at
most 3 dimensions larger than 1, only the listed ops and their limitations. The compiler cuts the
graph once: the first op it cannot map, and every op after it, run on the CPU.
The report is a prediction made without the compiler; ``compile_edgetpu`` runs the real one if installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .flatbuf import TFLiteModel, activation_name, read_model

# Op -> documented limitation (empty if none). coral.ai supported-operations table (compiler 16).
SUPPORTED_OPS = {
    "ADD": "",
    "SUB": "",
    "MUL": "",
    "MAXIMUM": "",
    "MINIMUM": "",
    "SQUARED_DIFFERENCE": "",
    "AVERAGE_POOL_2D": "no fused activation function",
    "MAX_POOL_2D": "no fused activation function",
    "CONCATENATION": "no fused activation function; a constant input must be all zeros with exactly 2 inputs",
    "CONV_2D": "same dilation in x and y",
    "DEPTHWISE_CONV_2D": "no dilation",
    "TRANSPOSE_CONV": "",
    "FULLY_CONNECTED": "default weights format only; output is one-dimensional",
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "TANH": "",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "PRELU": "alpha must be constant",
    "HARD_SWISH": "",
    "MEAN": "no reduction in the batch dimension; x and/or y only",
    "SUM": "no reduction in the batch dimension",
    "REDUCE_MAX": "no reduction in the batch dimension",
    "REDUCE_MIN": "no reduction in the batch dimension",
    "PAD": "no padding in the batch dimension; x and/or y only",
    "PACK": "no packing in the batch dimension",
    "SPLIT": "no splitting in the batch dimension",
    "RESHAPE": "may not map for large tensors",
    "SQUEEZE": "",
    "EXPAND_DIMS": "",
    "TRANSPOSE": "",
    "SLICE": "",
    "STRIDED_SLICE": "all strides 1, no ellipsis or new-axis mask",
    "RESIZE_BILINEAR": "3-D input/output",
    "RESIZE_NEAREST_NEIGHBOR": "3-D input/output",
    "SPACE_TO_DEPTH": "",
    "RSQRT": "",
    "GATHER": "",
    "SOFTMAX": "1-D input of at most 16,000 elements",
    "QUANTIZE": "",
    "LSTM": "unidirectional only",
}
_NO_FUSED_ACT = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}
_WEIGHT_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}
_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}
_INT_PARAM_OK = {
    "RESHAPE",
    "MEAN",
    "SUM",
    "REDUCE_MAX",
    "REDUCE_MIN",
    "PAD",
    "SQUEEZE",
    "EXPAND_DIMS",
    "TRANSPOSE",
    "SLICE",
    "STRIDED_SLICE",
    "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR",
    "SPLIT",
    "GATHER",
    "TRANSPOSE_CONV",
}
EIGHT_BIT = ("INT8", "UINT8")
NOT_FOUND = "edgetpu_compiler not found on PATH; wrote the CPU bundle only"


def _tensor_problems(model: TFLiteModel, op, static_batch: bool) -> list:
    """Reasons from the tensors of ``op``: dtypes, constness, dynamic sizes, batch and rank."""
    why = []
    for pos, ti in enumerate(op.inputs):
        if ti < 0:
            continue
        t = model.tensors[ti]
        if pos == _WEIGHT_INPUT.get(op.name) and not t.constant:
            why.append(f"weights '{t.name}' are not constant at compile time")
        if t.constant:
            if pos == _BIAS_INPUT.get(op.name) and t.dtype in ("INT32", "INT64"):
                continue  # 8-bit models carry 32-bit biases
            if t.dtype not in EIGHT_BIT and not (
                op.name in _INT_PARAM_OK and t.dtype in ("INT32", "INT64")
            ):
                why.append(f"constant '{t.name}' is {t.dtype}, not 8-bit")
    for ti in [i for i in op.inputs if i >= 0] + op.outputs:
        t = model.tensors[ti]
        if t.constant:
            continue
        if t.dtype not in EIGHT_BIT:
            why.append(f"tensor '{t.name}' is {t.dtype}, not int8/uint8")
        sig = t.shape_signature
        dyn = [i for i, d in enumerate(sig) if d < 0]
        if dyn and not (static_batch and dyn == [0]):
            why.append(f"tensor '{t.name}' has a dynamic shape {sig}")
        shape = [1 if d < 0 else d for d in sig]
        if len(shape) == 4 and shape[0] > 1:
            why.append(f"tensor '{t.name}' has batch {shape[0]} (the Edge TPU runs batch 1)")
        if len(shape) > 3 and any(d > 1 for d in shape[:-3]):
            why.append(
                f"tensor '{t.name}' {shape}: only the 3 innermost dimensions may be larger than 1"
            )
    return why


def _op_problems(model: TFLiteModel, op) -> list:
    """Reasons from the op itself: unsupported, fused activation, and the documented per-op limits."""
    if op.name not in SUPPORTED_OPS:
        return [f"{op.name} is not in the Edge TPU's supported operations"]
    why, o = [], op.options
    if op.name in _NO_FUSED_ACT and activation_name(o) != "NONE":
        why.append(f"fused activation {activation_name(o)} is not supported on {op.name}")
    if (
        op.name == "CONV_2D"
        and o is not None
        and getattr(o, "dilationWFactor", 1) != getattr(o, "dilationHFactor", 1)
    ):
        why.append("different dilation in x and y")
    if (
        op.name == "DEPTHWISE_CONV_2D"
        and o is not None
        and max(getattr(o, "dilationWFactor", 1), getattr(o, "dilationHFactor", 1)) > 1
    ):
        why.append("dilated depthwise convolution")
    if op.name == "FULLY_CONNECTED" and o is not None and getattr(o, "weightsFormat", 0) != 0:
        why.append("non-default fully-connected weights format")
    if op.name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN") and len(op.inputs) > 1:
        axes = model.tensors[op.inputs[1]].data
        rank = len(model.tensors[op.inputs[0]].shape)
        if axes is not None and any(int(a) % max(rank, 1) == 0 for a in axes.ravel()) and rank == 4:
            why.append("reduces over the batch dimension")
    if op.name == "SOFTMAX":
        t = model.tensors[op.inputs[0]]
        n = 1
        for d in t.shape[1:] if len(t.shape) > 1 else t.shape:
            n *= max(d, 1)
        if n > 16000:
            why.append(f"softmax over {n} elements (max 16,000)")
    return why


def _boundary_conversion(model: TFLiteModel, op) -> str:
    """Reason if ``op`` only converts a float graph input to 8-bit, or an 8-bit result to a float graph output."""
    ins = [model.tensors[i] for i in op.inputs if i >= 0]
    if (
        op.name == "QUANTIZE"
        and len(ins) == 1
        and op.inputs[0] in model.inputs
        and ins[0].dtype.startswith("FLOAT")
    ):
        return (
            "quantizes the float input on the CPU before the Edge TPU part (int8 input avoids it)"
        )
    if op.name == "DEQUANTIZE" and all(o in model.outputs for o in op.outputs):
        return "dequantizes the output to float on the CPU after the Edge TPU part (int8 output avoids it)"
    return ""


def check_model(data: bytes, name: str = "model", static_batch: bool = False) -> dict:
    """Edge TPU compatibility report of a .tflite buffer, as a JSON-ready dict.

    ``static_batch``: treat a dynamic batch dimension as 1 (the report of a CPU model whose Edge TPU
    copy is converted with a static batch of 1). Every op gets ``where`` = "edgetpu" or "cpu" and reasons.
    """
    model = read_model(data, name)
    ops, first = [], None
    for op in model.ops:
        own = _op_problems(model, op) + _tensor_problems(model, op, static_batch)
        boundary = _boundary_conversion(model, op)
        if (
            own and boundary
        ):  # float in/out conversion at the graph's edge: CPU, but does not split the graph
            where, why = "cpu", [boundary]
        elif own:
            first = op.index if first is None else first
            where, why = "cpu", own
        elif first is not None:
            where = "cpu"
            why = [
                f"after the first unsupported op (#{first} {model.ops[first].name}): the compiler partitions "
                "the graph once, so everything after it runs on the CPU"
            ]
        else:
            where, why = "edgetpu", []
        ops.append(
            {
                "index": op.index,
                "op": op.name,
                "where": where,
                "reasons": why,
                "limitation": SUPPORTED_OPS.get(op.name, ""),
            }
        )
    n_tpu = sum(o["where"] == "edgetpu" for o in ops)
    return {
        "file": name,
        "static_batch_assumed": bool(static_batch),
        "subgraphs": model.n_subgraphs,
        "ops_total": len(ops),
        "ops_edgetpu": n_tpu,
        "ops_cpu": len(ops) - n_tpu,
        "first_unsupported": None
        if first is None
        else {"index": first, "op": model.ops[first].name, "reasons": ops[first]["reasons"]},
        "ready": first is None and model.n_subgraphs == 1,
        "ops": ops,
        "source": "rules of coral.ai 'TensorFlow models on the Edge TPU'; a prediction, the compiler decides",
    }


def summarize(report: dict) -> str:
    """One line: ready, or how many ops fall back to the CPU and where it starts."""
    f = report["first_unsupported"]
    if report["ready"]:
        extra = (
            f" (the other {report['ops_cpu']} only convert float input/output)"
            if report["ops_cpu"]
            else ""
        )
        return f"{report['ops_edgetpu']}/{report['ops_total']} ops map to the Edge TPU{extra}"
    if f is None:
        return f"{report['subgraphs']} subgraphs: only the main one can map to the Edge TPU"
    return (
        f"{report['ops_edgetpu']}/{report['ops_total']} ops map to the Edge TPU, {report['ops_cpu']} run on the "
        f"CPU; the graph is cut at op #{f['index']} {f['op']} ({f['reasons'][0]})"
    )


_STATS = {
    "version": r"Edge TPU Compiler version (\S+)",
    "subgraphs": r"Number of Edge TPU subgraphs:\s*(\d+)",
    "ops_total": r"Total number of operations:\s*(\d+)",
    "ops_edgetpu": r"Number of operations that will run on Edge TPU:\s*(\d+)",
    "ops_cpu": r"Number of operations that will run on CPU:\s*(\d+)",
    "on_chip_memory": r"On-chip memory used for caching model parameters:\s*(\S+)",
    "off_chip_memory": r"Off-chip memory used for streaming uncached model parameters:\s*(\S+)",
}


def parse_compiler_output(stdout: str, op_log: str = "") -> dict:
    """Numbers from ``edgetpu_compiler`` stdout and the per-op table of its ``*_edgetpu.log``."""
    out = {}
    for key, pat in _STATS.items():
        m = re.search(pat, stdout) or re.search(pat, op_log)
        if m:
            out[key] = int(m.group(1)) if m.group(1).isdigit() else m.group(1)
    ops = []
    for line in op_log.splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(\S.*?)\s*$", line)
        if m:
            ops.append({"op": m.group(1), "count": int(m.group(2)), "status": m.group(3)})
    out["ops"] = ops
    return out


def compile_edgetpu(tflite_path, out_dir, timeout: float = 300) -> dict:
    """Run ``edgetpu_compiler`` on ``tflite_path`` into ``out_dir`` if it is on PATH; never raises for its absence.

    Returns {"status": "compiled"|"not_found"|"failed", "message", "output" (path or None), "log", "stats"}.
    A missing compiler is a normal outcome (it is not installable everywhere): the CPU model still works.
    """
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return {"status": "not_found", "message": NOT_FOUND, "output": None, "log": "", "stats": {}}
    src, out_dir = Path(tflite_path), Path(out_dir)
    cmd = [exe, "--show_operations", "--out_dir", str(out_dir), str(src)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {
            "status": "failed",
            "message": f"edgetpu_compiler timed out after {timeout:.0f} s; wrote the CPU "
            "bundle only",
            "output": None,
            "log": "",
            "stats": {},
        }
    except OSError as e:
        return {
            "status": "failed",
            "message": f"edgetpu_compiler could not run ({e.strerror}); wrote the CPU bundle only",
            "output": None,
            "log": "",
            "stats": {},
        }
    log = p.stdout + (("\n" + p.stderr) if p.stderr.strip() else "")
    op_log_path = out_dir / f"{src.stem}_edgetpu.log"
    op_log = op_log_path.read_text(errors="replace") if op_log_path.exists() else ""
    stats = parse_compiler_output(log, op_log)
    output = out_dir / f"{src.stem}_edgetpu.tflite"
    if p.returncode != 0 or not output.exists():
        last = next(
            (l for l in reversed(log.splitlines()) if l.strip()), f"exit code {p.returncode}"
        )
        return {
            "status": "failed",
            "message": f"edgetpu_compiler failed: {last.strip()}; wrote the CPU bundle only",
            "output": None,
            "log": log,
            "op_log": op_log,
            "stats": stats,
        }
    msg = "compiled for the Edge TPU"
    if "ops_cpu" in stats and stats["ops_cpu"]:
        msg += (
            f" ({stats.get('ops_edgetpu', '?')} ops on the Edge TPU, {stats['ops_cpu']} on the CPU)"
        )
    return {
        "status": "compiled",
        "message": msg,
        "output": str(output),
        "log": log,
        "op_log": op_log,
        "stats": stats,
    }
