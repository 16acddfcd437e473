"""``metalite inspect`` works where TensorFlow is not installed: ai-edge-litert's TFLite schema module parses the
.tflite files and reads them exactly as TensorFlow's schema (the fallback) does; with neither, one line says what
to install.

Each run is a real ``metalite`` process with some packages made unimportable: a None in ``sys.modules`` makes
``import tensorflow`` fail and ``importlib.util.find_spec("tensorflow")`` answer None, as on a device without it.
"""

from __future__ import annotations

import json
import subprocess
import sys

from repo_paths import REPO

BUNDLE = REPO / "models" / "omniglot"
SHIM = """
import sys
for name in filter(None, sys.argv[1].split(",")):
    sys.modules[name] = None

from metalite.tools.cli import main
sys.argv = ["metalite", *sys.argv[2:]]
main()
"""


def _inspect(blocked: tuple, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SHIM, ",".join(blocked), "inspect", *args, str(BUNDLE)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_inspect_runs_without_tensorflow():
    p = _inspect(("tensorflow", "tf_keras"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "backbone.tflite: int8 in and out, full-integer quantized" in p.stdout
    assert "runtime on this machine: backbone.tflite: ai_edge_litert" in p.stdout
    assert "checksums: all files match the manifest" in p.stdout


def test_litert_schema_reads_the_same_ops_and_shapes_as_tensorflows():
    litert = _inspect(("tensorflow", "tf_keras"), "--json", "--no-runtime")
    tf = _inspect(
        ("ai_edge_litert",), "--json", "--no-runtime"
    )  # TensorFlow's schema, the fallback
    assert litert.returncode == 0 and tf.returncode == 0, litert.stderr + tf.stderr
    a, b = json.loads(litert.stdout), json.loads(tf.stdout)
    assert a == b
    manifest = json.loads((BUNDLE / "manifest.json").read_text())
    backbone = a["models"]["backbone.tflite"]
    assert backbone["ops"]["CONV_2D"] >= 4 and backbone["n_ops"] == sum(backbone["ops"].values())
    assert backbone["input"]["shape"] == [-1, *manifest["input"]["shape"]]
    assert backbone["output"]["shape"] == [-1, manifest["output"]["embedding_dim"]]
    assert (
        backbone["input"]["quantization"]["zero_point"]
        == manifest["input"]["quantization"]["zero_point"]
    )
    assert backbone["weights"]["weights"] > 0 and len(backbone["weights"]["tensors"]) >= 4
    text = [
        _inspect(blocked, "--no-runtime").stdout
        for blocked in (("tensorflow", "tf_keras"), ("ai_edge_litert",))
    ]
    assert text[0] == text[1] and "CONV_2D x" in text[0]


def test_inspect_without_any_schema_says_what_to_install():
    p = _inspect(("tensorflow", "tf_keras", "ai_edge_litert"))
    assert p.returncode == 1
    assert (
        p.stdout + p.stderr
    ).strip() == "Error: this command needs ai-edge-litert: pip install 'metalite[litert]'"
