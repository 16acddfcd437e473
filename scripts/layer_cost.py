"""Where the time of one backbone invoke goes: the model cut after each op, every cut timed interleaved.

    python scripts/layer_cost.py models/omniglot models/omniglot-fast [--rounds 7 --calls 300] [--json OUT]

For each bundle, ``backbone.tflite`` is rewritten (in a temp dir, with ai-edge-litert's flatbuffer schema,
no TensorFlow) into prefixes that end after op 1, 2, ... n, with a static batch of 1, and into its last op
alone (the per-invoke cost of interpreter, delegate and Python with almost no arithmetic). Each prefix is opened
like the runtime opens a backbone (``metalite.runtime.interpreter.open_model``, 1 thread) and, for
comparison, with the interpreter's built-in kernels (no delegate); the full model is also timed as shipped
(dynamic batch, resized to 1). Times are this thread's CPU time per call (``time.thread_time``), which a
shared machine's preemptions do not inflate. Rounds interleave every model of every bundle in a shuffled order; the
table gives medians over rounds of the per-call time, the increment each op adds, and its
multiply-accumulates. An op's increment near zero with many MACs, or a large one with few, is what this
is for. Prints Markdown with the processor line of ``bench/machine.py`` and the load average.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _op_names(model) -> list:
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        out.append(
            names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
        )
    return out


def _macs(model, op, name: str) -> int:
    t = model.subgraphs[0].tensors
    if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        return 0
    out_shape, w_shape = list(t[op.outputs[0]].shape), list(t[op.inputs[1]].shape)
    if name == "DEPTHWISE_CONV_2D":
        return int(np.prod(out_shape) * w_shape[1] * w_shape[2])
    return int(np.prod(out_shape) * np.prod(w_shape[1:]))


def _pack(model) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1 << 16)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def cuts(tflite: Path, out_dir: Path) -> list:
    """Write the static-batch prefixes of ``tflite`` to ``out_dir``; [(path, op name, MACs of that op)]."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite.read_bytes()), 0)
    for tensor in model.subgraphs[0].tensors:  # batch 1 everywhere: what a device runs
        if (
            tensor.shapeSignature is not None
            and len(tensor.shapeSignature)
            and tensor.shapeSignature[0] == -1
        ):
            tensor.shapeSignature[0] = 1
            tensor.shape[0] = 1
    names, res = _op_names(model), []
    model.signatureDefs = []
    # op 0: the last op alone (a RESHAPE here), fed directly: the interpreter's, delegate's and Python's
    # per-invoke cost with next to no arithmetic
    m = copy.deepcopy(model)
    g = m.subgraphs[0]
    g.operators = g.operators[-1:]
    g.inputs = [g.operators[0].inputs[0]]
    path = out_dir / f"{tflite.parent.name}-00.tflite"
    path.write_bytes(_pack(m))
    res.append((path, f"{names[-1]} alone", 0))
    for k in range(1, len(names) + 1):
        m = copy.deepcopy(model)
        g = m.subgraphs[0]
        g.operators = g.operators[:k]
        g.outputs = [g.operators[-1].outputs[0]]
        path = out_dir / f"{tflite.parent.name}-{k:02d}.tflite"
        path.write_bytes(_pack(m))
        res.append(
            (path, names[k - 1], _macs(model, model.subgraphs[0].operators[k - 1], names[k - 1]))
        )
    return res


def _open(path: Path, delegate: bool):
    from metalite.runtime.interpreter import get_backend, open_model

    if delegate:
        interp = open_model(path, num_threads=1)[0]
    else:
        b = get_backend()
        interp = b.Interpreter(
            model_path=str(path),
            num_threads=1,
            experimental_op_resolver_type=b.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
    d = interp.get_input_details()[0]
    if int(d["shape"][0]) != 1:
        interp.resize_tensor_input(d["index"], [1, *d["shape"][1:]], strict=True)
        interp.allocate_tensors()
    interp.set_tensor(d["index"], np.zeros([1, *d["shape"][1:]], d["dtype"]))
    interp.invoke()
    return interp


def _time(interp, calls: int) -> float:
    """ms per ``invoke``: CPU time of this thread (1 interpreter thread runs in it), so a busy machine's
    preemptions do not count; cache and memory contention from other processes still do."""
    inv = interp.invoke
    t0 = time.thread_time()
    for _ in range(calls):
        inv()
    return (time.thread_time() - t0) / calls * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    from metalite.bench.machine import machine_info, processor_text

    with tempfile.TemporaryDirectory() as td:
        models, meta = {}, {}
        for b in a.bundles:
            for k, (path, name, macs) in enumerate(cuts(b / "backbone.tflite", Path(td))):
                meta[(b.name, k)] = (name, macs)
                for kind in ("xnnpack", "builtin"):
                    models[(b.name, k, kind)] = _open(path, kind == "xnnpack")
            models[(b.name, "shipped", "xnnpack")] = _open(b / "backbone.tflite", True)
        load0 = os.getloadavg()
        times = {key: [] for key in models}
        rng = random.Random(0)
        for _ in range(a.rounds):
            order = list(models)
            rng.shuffle(order)
            for key in order:
                times[key].append(_time(models[key], a.calls))
        load1 = os.getloadavg()
    med = {key: float(np.median(v)) for key, v in times.items()}
    m = machine_info()
    print(
        f"Per-invoke CPU time, batch 1, 1 thread, on {processor_text(m)}; load average "
        f"{'/'.join(f'{v:.2f}' for v in load0)} before, {'/'.join(f'{v:.2f}' for v in load1)} after; "
        f"{a.rounds} interleaved rounds of {a.calls} calls, medians.\n"
    )
    rows = []
    for b in a.bundles:
        n = max(k for (name, k) in meta if name == b.name)
        print(
            f"**{b}** (shipped, dynamic batch resized to 1: {med[(b.name, 'shipped', 'xnnpack')]:.4f} ms)\n"
        )
        print("| ops up to | op | MMACs | XNNPACK ms | + this op | built-in ms | + this op |")
        print("|---|---|---|---|---|---|---|")
        prev = {"xnnpack": 0.0, "builtin": 0.0}
        for k in range(0, n + 1):
            name, macs = meta[(b.name, k)]
            x, c = med[(b.name, k, "xnnpack")], med[(b.name, k, "builtin")]
            if k == 0:  # not a prefix: the fixed cost, shown on its own
                print(f"| (fixed) | {name} | 0 | {x:.4f} | | {c:.4f} | |")
                rows.append(
                    {
                        "bundle": str(b),
                        "ops": 0,
                        "op": name,
                        "macs": 0,
                        "xnnpack_ms": x,
                        "builtin_ms": c,
                    }
                )
                continue
            print(
                f"| {k} | {name} | {macs / 1e6:.2f} | {x:.4f} | {x - prev['xnnpack']:+.4f} | {c:.4f} | "
                f"{c - prev['builtin']:+.4f} |"
            )
            rows.append(
                {
                    "bundle": str(b),
                    "ops": k,
                    "op": name,
                    "macs": macs,
                    "xnnpack_ms": x,
                    "builtin_ms": c,
                }
            )
            prev = {"xnnpack": x, "builtin": c}
        print()
    if a.json:
        from metalite.common.files import atomic_write_text

        atomic_write_text(
            a.json,
            json.dumps(
                {
                    "machine": m,
                    "loadavg": [load0, load1],
                    "rounds": a.rounds,
                    "calls": a.calls,
                    "rows": rows,
                    "shipped_ms": {b.name: med[(b.name, "shipped", "xnnpack")] for b in a.bundles},
                },
                indent=1,
            ),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
