"""export/: int8 conversion, bundle writing (atomic, checksummed), Edge TPU report and compiler call, inspect.

Tiny models and a few synthetic glyph-like images keep this fast (a conversion takes a few seconds).
"""

import json
import os
import stat
import zipfile

import numpy as np
import pytest

pytest.importorskip("tf_keras")

from metalite.export import bundle as bundle_mod  # noqa: E402
from metalite.export import edgetpu, tflite  # noqa: E402
from metalite.export.errors import ExportError  # noqa: E402
from metalite.export.flatbuf import read_model  # noqa: E402
from metalite.export.inspect import inspect_bundle, render_text  # noqa: E402
from metalite.export.tfcompat import keras, tf  # noqa: E402
from metalite.runtime.head import HeadSpec  # noqa: E402
from metalite.training.models import build_backbone  # noqa: E402

EMB = 16


def glyphs(n, seed, size=28):
    """Float model inputs that look like ink strokes: a few random thick lines on an empty page, ink = 1."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size, 1), np.float32)
    yy, xx = np.mgrid[:size, :size]
    for img in out:
        for _ in range(rng.integers(2, 5)):
            (y0, x0), (y1, x1) = rng.uniform(3, size - 3, (2, 2))
            t = np.clip(
                ((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0))
                / ((y1 - y0) ** 2 + (x1 - x0) ** 2 + 1e-6),
                0,
                1,
            )
            d = np.hypot(yy - (y0 + t * (y1 - y0)), xx - (x0 + t * (x1 - x0)))
            img[..., 0] = np.maximum(img[..., 0], np.clip(2.0 - d, 0, 1))
    return out


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    m = build_backbone({"kind": "dsconv", "filters": 16, "embedding_dim": EMB})
    # Non-trivial BN statistics, as after training, so int8 ranges matter.
    x = glyphs(64, 1)
    for layer in m.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            sub = keras.Model(m.input, layer.input)
            a = sub(x).numpy().reshape(-1, layer.input.shape[-1])
            g, b, _, _ = layer.get_weights()
            layer.set_weights([g, b + 0.1, a.mean(0), a.var(0) + 1e-3])
    return m


@pytest.fixture(scope="module")
def rep():
    return glyphs(16, 2)


@pytest.fixture(scope="module")
def head():
    rng = np.random.default_rng(0)
    return HeadSpec(
        [(rng.normal(size=(EMB, 8)).astype(np.float32), np.zeros(8, np.float32))], ["linear"]
    )


@pytest.fixture(scope="module")
def cpu_model(model, rep):
    return tflite.convert_int8(model, rep)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, model, rep, head):
    out = tmp_path_factory.mktemp("b") / "bundle"
    meta = {
        "training": {"algorithm": "protonet", "data": "glyphs"},
        "compression": {"sparsity": 0.0, "pqat": False},
        "accuracy": {
            "5way1shot": {"mean": 0.9, "ci95": 0.01, "episodes": 10, "data": "glyphs test"}
        },
    }
    return bundle_mod.write_bundle(out, model, head, rep, meta, float_model=True, progress=False)


def test_int8_io_and_int8_weights(cpu_model):
    io = tflite.io_details(cpu_model)
    assert io["input"]["dtype"] == io["output"]["dtype"] == "int8"
    assert (
        io["input"]["batch"] == -1
        and io["input"]["shape"] == [28, 28, 1]
        and io["output"]["shape"] == [EMB]
    )
    m = read_model(cpu_model)
    weighted = [
        op for op in m.ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    ]
    assert len(weighted) == 9
    for op in weighted:
        assert m.tensors[op.inputs[1]].dtype == "INT8", op.name
        assert all(m.tensors[i].dtype == "INT8" for i in [op.inputs[0]] + op.outputs)


def test_int8_embeddings_agree_with_keras(model, cpu_model):
    x = glyphs(40, 3)  # not the calibration images
    agree = tflite.cosine_agreement(
        tflite.run_int8(cpu_model, x, batch=32), model(x, training=False).numpy()
    )
    assert agree["min"] > 0.98 and agree["mean"] > 0.99, agree


def test_batch_resize_and_static_batch_variant(model, rep, cpu_model):
    it = tflite.interpreter(cpu_model, batch=32)
    it.set_tensor(it.get_input_details()[0]["index"], np.zeros((32, 28, 28, 1), np.int8))
    it.invoke()
    assert it.get_tensor(it.get_output_details()[0]["index"]).shape == (32, EMB)
    b1 = tflite.convert_int8(model, rep, batch=1)
    io = tflite.io_details(b1)
    assert io["input"]["batch"] == 1 and io["input"]["dtype"] == "int8"
    assert edgetpu.check_model(b1)["ready"]  # the dsconv backbone maps fully


@pytest.mark.slow
def test_qat_annotated_model_converts(rep):
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    keras.utils.set_random_seed(0)
    q = tfmot.quantization.keras.quantize_model(
        build_backbone({"kind": "conv4", "filters": 8, "embedding_dim": 8})
    )
    assert tflite.is_quantize_annotated(q)
    for batch in (None, 1):
        io = tflite.io_details(tflite.convert_int8(q, rep[:4], batch=batch))
        assert io["input"]["dtype"] == io["output"]["dtype"] == "int8"
        assert io["input"]["batch"] == (-1 if batch is None else 1)


@pytest.mark.slow
def test_manifest_and_checksums(bundle, head):
    man = json.loads((bundle / "manifest.json").read_text())
    assert man["format"] == "metalite-bundle" and man["format_version"] == 1
    assert man["input"]["shape"] == [28, 28, 1] and man["input"]["dtype"] == "int8"
    assert man["input"]["preprocess"] == {
        "color": "L",
        "resize": "area",
        "invert": True,
        "range": [0.0, 1.0],
    }
    assert man["output"]["embedding_dim"] == EMB and man["output"]["quantization"]["scale"] > 0
    assert man["head"]["layers"] == head.config()["layers"]
    assert (
        man["training"]["algorithm"] == "protonet" and man["accuracy"]["5way1shot"]["mean"] == 0.9
    )
    assert (
        man["backbone"]["float_file"] == "backbone_float.tflite"
        and man["backbone"]["edgetpu_file"] is None
    )
    assert man["quantization_check"]["cosine_min"] > 0.98
    names = {p.name for p in bundle.iterdir()}
    assert names == {
        "manifest.json",
        "backbone.tflite",
        "backbone_float.tflite",
        "head.npz",
        "edgetpu_report.json",
    }
    assert set(man["files"]) == names - {"manifest.json"}
    info = inspect_bundle(bundle)
    assert info["checksums"]["ok"], info["checksums"]
    assert info["edgetpu"]["ready"]
    assert info["models"]["backbone.tflite"]["ops"]["CONV_2D"] == 5
    assert (
        info["sizes"]["backbone.tflite"]["gzip_bytes"] < info["sizes"]["backbone.tflite"]["bytes"]
    )
    assert "checksums: all files match" in render_text(info)


@pytest.mark.slow
def test_runtime_opens_the_bundle(bundle):
    rb = pytest.importorskip("metalite.runtime.bundle")
    b = rb.open_bundle(bundle)
    assert b.embedding_dim == EMB and tuple(b.input_shape) == (28, 28, 1)


@pytest.mark.slow
def test_inspect_detects_modified_file_and_reads_zip(bundle, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in bundle.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as z:
        for p in copy.iterdir():
            z.write(p, f"bundle/{p.name}")
    assert inspect_bundle(tmp_path / "b.zip")["checksums"]["ok"]
    data = bytearray((copy / "head.npz").read_bytes())
    data[-10] ^= 0xFF
    (copy / "head.npz").write_bytes(bytes(data))
    c = inspect_bundle(copy)["checksums"]
    assert not c["ok"] and c["problems"] == ["head.npz: sha256 mismatch (modified or corrupt)"]

    from click.testing import CliRunner

    from metalite.tools.cli import main

    r = CliRunner().invoke(main, ["inspect", str(copy)])
    assert r.exit_code == 1 and "head.npz: sha256 mismatch" in r.output
    r = CliRunner().invoke(main, ["inspect", "--json", str(bundle)])
    assert r.exit_code == 0 and json.loads(r.output)["checksums"]["ok"]


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_failed_conversion_leaves_nothing(tmp_path, model, rep, head, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(tflite, "convert_int8", boom)
    with pytest.raises(RuntimeError):
        bundle_mod.write_bundle(tmp_path / "out", model, head, rep, progress=False)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


@pytest.mark.slow
def test_failure_after_files_written_keeps_old_bundle(
    tmp_path, bundle, model, rep, head, monkeypatch
):
    out = tmp_path / "out"
    out.mkdir()
    for p in bundle.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match="already exists"):
        bundle_mod.write_bundle(out, model, head, rep, progress=False)

    def boom(*a, **k):
        raise KeyboardInterrupt  # interrupted while backbone.tflite and head.npz are already written

    monkeypatch.setattr(bundle_mod, "_edgetpu", boom)
    with pytest.raises(KeyboardInterrupt):
        bundle_mod.write_bundle(out, model, head, rep, progress=False, overwrite=True)
    assert (out / "manifest.json").read_bytes() == before and _leftovers(tmp_path) == []


def test_unwritable_output_is_one_line_error(tmp_path, model, rep, head):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ExportError) as e:
        bundle_mod.write_bundle(tmp_path / "afile" / "out", model, head, rep, progress=False)
    assert "\n" not in str(e.value) and "afile" in str(e.value)
    junk = tmp_path / "notabundle"
    junk.mkdir()
    (junk / "precious.txt").write_text("keep")
    with pytest.raises(ExportError, match="not a metalite bundle"):
        bundle_mod.write_bundle(junk, model, head, rep, progress=False, overwrite=True)


def test_edgetpu_report_flags_unsupported_op(rep):
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Lambda(lambda t: tf.math.sin(t))(
        x
    )  # no int8 kernel: stays float between (de)quantize
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [
            tf.function(lambda t: keras.Model(inp, x)(t)).get_concrete_function(
                tf.TensorSpec((1, 28, 28, 1))
            )
        ]
    )
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([r[None]] for r in rep[:4])
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    rep_ = edgetpu.check_model(conv.convert(), "sin.tflite")
    assert not rep_["ready"]
    by_op = {o["op"]: o for o in rep_["ops"]}
    assert (
        by_op["SIN"]["where"] == "cpu"
        and "not in the Edge TPU's supported operations" in by_op["SIN"]["reasons"][0]
    )
    first = rep_["first_unsupported"]["index"]
    assert (
        rep_["ops"][0]["op"] == "QUANTIZE" and "float input" in rep_["ops"][0]["reasons"][0]
    )  # edge, not a cut
    assert rep_["ops"][1]["op"] == "CONV_2D" and rep_["ops"][1]["where"] == "edgetpu"
    assert rep_["ops"][first]["op"] in ("DEQUANTIZE", "SIN")
    after = rep_["ops"][first + 1 :]
    assert after and all(o["where"] == "cpu" for o in after)
    assert any("after the first unsupported op" in r for o in after for r in o["reasons"])
    assert "run on the CPU" in edgetpu.summarize(rep_)


FAKE_COMPILER = r"""#!/usr/bin/env python3
import os, shutil, sys
args = sys.argv[1:]
open(os.environ["FAKE_ETPU_ARGS"], "w").write(" ".join(args))
if os.environ.get("FAKE_ETPU_FAIL"):
    print("Edge TPU Compiler version 16.0.384591198"); print("Internal compiler error. Aborting!"); sys.exit(1)
out = args[args.index("--out_dir") + 1]; src = args[-1]
stem = os.path.splitext(os.path.basename(src))[0]
shutil.copy(src, os.path.join(out, stem + "_edgetpu.tflite"))
open(os.path.join(out, stem + "_edgetpu.log"), "w").write(
    "Edge TPU Compiler version 16.0.384591198\nInput: x\nOutput: y\n\n"
    "Operator                       Count      Status\n\n"
    "CONV_2D                        5          Mapped to Edge TPU\n"
    "DEPTHWISE_CONV_2D              4          Mapped to Edge TPU\n")
print("Edge TPU Compiler version 16.0.384591198\n\nModel compiled successfully in 12 ms.\n"
      "Number of Edge TPU subgraphs: 1\nTotal number of operations: 11\n"
      "Number of operations that will run on Edge TPU: 11\nNumber of operations that will run on CPU: 0\n")
"""


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "edgetpu_compiler"
    exe.write_text(FAKE_COMPILER)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ETPU_ARGS", str(tmp_path / "args.txt"))
    return tmp_path / "args.txt"


def test_fake_compiler_is_invoked_and_logged(tmp_path, fake_compiler, model, rep, head):
    out = bundle_mod.write_bundle(tmp_path / "etpu", model, head, rep, edgetpu=True, progress=False)
    assert "--out_dir" in fake_compiler.read_text() and fake_compiler.read_text().endswith(
        "backbone.tflite"
    )
    man = json.loads((out / "manifest.json").read_text())
    assert (
        man["backbone"]["edgetpu_file"] == "backbone_edgetpu.tflite"
        and "backbone_edgetpu.tflite" in man["files"]
    )
    assert man["edgetpu"]["compiler"]["status"] == "compiled"
    assert man["edgetpu"]["compiler"]["version"] == "16.0.384591198"
    report = json.loads((out / "edgetpu_report.json").read_text())
    assert report["static_batch_assumed"] is False and report["ready"]
    assert "Model compiled successfully" in report["compiler"]["log"]
    assert report["compiler"]["stats"]["ops_edgetpu"] == 11
    assert {"op": "CONV_2D", "count": 5, "status": "Mapped to Edge TPU"} in report["compiler"][
        "stats"
    ]["ops"]
    assert not (out / ".edgetpu").exists() and inspect_bundle(out)["checksums"]["ok"]


def test_failing_compiler_keeps_cpu_bundle(tmp_path, fake_compiler, cpu_model, monkeypatch):
    monkeypatch.setenv("FAKE_ETPU_FAIL", "1")
    (tmp_path / "m.tflite").write_bytes(cpu_model)
    r = edgetpu.compile_edgetpu(tmp_path / "m.tflite", tmp_path)
    assert (
        r["status"] == "failed"
        and "Internal compiler error" in r["message"]
        and "\n" not in r["message"]
    )


def test_absent_compiler_is_a_status_not_a_failure(tmp_path, model, rep, head, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    r = edgetpu.compile_edgetpu(tmp_path / "x.tflite", tmp_path)
    assert (
        r["status"] == "not_found"
        and r["message"] == "edgetpu_compiler not found on PATH; wrote the CPU bundle only"
    )
    out = bundle_mod.write_bundle(tmp_path / "cpu", model, head, rep, edgetpu=True, progress=False)
    man = json.loads((out / "manifest.json").read_text())
    assert (
        man["edgetpu"]["compiler"]["message"] == r["message"]
        and man["backbone"]["edgetpu_file"] is None
    )
    assert (out / "backbone.tflite").exists() and not (out / "backbone_edgetpu.tflite").exists()


def test_cli_starts_without_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys; import metalite.tools.cli_export as c; import click; g = click.Group(); c.register(g); "
        "assert 'tensorflow' not in sys.modules and set(g.commands) == {'export', 'inspect'}"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
