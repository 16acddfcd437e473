"""The runtime in a device-like environment on x86: a fresh venv with only the project (no extras),
an interpreter package and Pillow; no TensorFlow anywhere."""

import json
import subprocess
from pathlib import Path

import pytest

from devicekit import agreement, assert_agreement, assert_colour_state, output_scale, record

pytestmark = pytest.mark.device  # every test here needs a device environment

STACKS = {"tflite": ("tflite_runtime", "1."), "litert": ("ai_edge_litert", "2.")}
WHOLE = {
    "omniglot": "whole graph",
    "omniglot-fast": "whole graph",
    "glyphs": "partial",
}  # what XNNPACK takes of the shipped bundles' graphs


@pytest.mark.parametrize("kind", sorted(STACKS))
def test_venv_has_no_tensorflow(venvs, kind):
    py = venvs(kind)
    names = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    ).stdout
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(names)}
    assert "metalite" in installed
    heavy = sorted(
        n for n in installed if n.startswith(("tensorflow", "tf-keras", "keras", "jax", "torch"))
    )
    assert not heavy, f"the device venv must not hold {heavy}"
    p = subprocess.run(
        [str(py), "-c", "import tensorflow"], capture_output=True, text=True, cwd="/"
    )
    assert p.returncode != 0 and "No module named 'tensorflow'" in p.stderr
    # installed from a wheel, not editable: the runtime comes from site-packages, even started in the repo root
    p = subprocess.run(
        [str(py), "-c", "import metalite.runtime as r; print(r.__file__)"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert p.returncode == 0, p.stderr
    assert "site-packages" in p.stdout, p.stdout


@pytest.mark.parametrize("kind", sorted(STACKS))
def test_api_adapt_predict_without_tf(x86_runs, bundles, kind, results_dir):
    backend, numpy_major = STACKS[kind]
    for name in bundles:
        r = x86_runs(kind, name)
        assert r["backend"] == backend and r["numpy"].startswith(numpy_major), (
            r["backend"],
            r["numpy"],
        )
        assert r["device"] == "cpu" and r["machine"] == "x86_64"
        assert r["tf"] == {"tensorflow_importable": False, "tf_modules_loaded": []}, r["tf"]
        assert r["state_roundtrip"] is True
        assert r["add_remove_pred_same"] >= 0.99
        assert (
            len(r["pred"]) == 200
            and set(r["pred"]) <= set(r["classes"])
            and len(r["classes"]) == 20
        )
        # int8 runs on XNNPACK on both stacks: tflite-runtime 2.14's default delegate is float-only, so the
        # runtime makes one with int8 switched on; ai-edge-litert's default delegate takes int8 itself.
        # Conv4 (omniglot) is taken whole; dsconv (glyphs) keeps its int8 AVERAGE_POOL_2D on the built-in kernels.
        acc = r["acceleration"]
        assert acc["delegate"] == "xnnpack" and acc["delegated"] == WHOLE.get(
            name, acc["delegated"]
        ), (name, acc)
        assert acc["delegated"] in ("whole graph", "partial"), acc
        assert acc["xnnpack_int8"].startswith(
            "enabled by metalite" if kind == "tflite" else "the interpreter's default"
        ), acc
        record(
            results_dir,
            f"x86-{kind}-{name}",
            {
                k: r[k]
                for k in (
                    "backend",
                    "backend_version",
                    "numpy",
                    "ms_per_image",
                    "fit_seconds",
                    "peak_rss_mb",
                    "accuracy",
                    "acceleration",
                )
            },
        )


@pytest.mark.parametrize("kind", sorted(STACKS))
def test_cli_adapt_predict(x86_runs, bundles, kind):
    """`metalite adapt` + `metalite predict --json` in the venv give the API's predictions on the same files."""
    for name in bundles:
        r = x86_runs(kind, name)
        cli = r["cli"]
        for step in ("adapt", "predict", "verbose"):
            assert cli[step]["returncode"] == 0, (
                f"metalite {step} failed: {cli[step]['stderr'][-2000:]}"
            )
            assert "Traceback" not in cli[step]["stderr"]
        # the interpreter library's own lines only with --verbose, which also says what runs the backbone
        for step in ("adapt", "predict"):
            assert "XNNPACK" not in cli[step]["stderr"] and "INFO:" not in cli[step]["stderr"], cli[
                step
            ]["stderr"]
        said = cli["verbose"]["stderr"]
        assert f"{STACKS[kind][0]} " in said and f"XNNPACK delegate ({WHOLE[name]}" in said, said
        assert "interpreter: INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in said, said
        _assert_cli_answers_as_the_api(r)


def _assert_cli_answers_as_the_api(r: dict) -> None:
    """`metalite predict --json` answers as the API on the same files and state, and as the API on the arrays."""
    cli = r["cli"]
    out = json.loads(cli["predict"]["stdout"])
    rows = out if isinstance(out, list) else out.get("predictions", out)
    by_image = {row["image"]: row["label"] for row in rows}
    cli_pred = [by_image[p] for p in cli["paths"]]
    assert cli_pred == r["api_pred_from_files"], "CLI and API disagree on the same images and state"
    # the PNG files hold exactly the arrays of task.npz: same predictions as from arrays
    same = sum(a == b for a, b in zip(cli_pred, r["pred"])) / len(cli_pred)
    assert same >= 0.99, same


def test_interpreters_agree(x86_runs, bundles, results_dir):
    """tflite-runtime 2.14 (numpy 1) and ai-edge-litert (numpy 2, XNNPACK) agree within the criterion."""
    for name, path in bundles.items():
        a = agreement(x86_runs("tflite", name), x86_runs("litert", name), output_scale(path))
        record(results_dir, f"agreement-tflite-vs-litert-{name}", a)
        assert_agreement(
            a,
            f"{name}: tflite-runtime vs ai-edge-litert",
            trained=name != "tiny",
            same_kernels=False,
        )


@pytest.mark.parametrize("kind", sorted(STACKS))
def test_colour_bundle_api_and_cli(x86_run, colour_bundle, colour_task, kind, results_dir):
    """An RGB bundle without TensorFlow: the API adapts from uint8 RGB arrays and keeps them in a format-3 state;
    `metalite adapt` / `metalite predict` on the same pictures as RGB PNG files give the API's answers."""
    name, path = colour_bundle
    r = x86_run(kind, path, colour_task)
    assert r["backend"] == STACKS[kind][0] and r["tf"] == {
        "tensorflow_importable": False,
        "tf_modules_loaded": [],
    }
    assert len(r["pred"]) == 20 and len(r["classes"]) == 10
    assert r["state_roundtrip"] is True and r["add_remove_pred_same"] >= 0.99
    assert_colour_state(r, colour_task)
    for step in ("adapt", "predict"):
        assert r["cli"][step]["returncode"] == 0, (
            f"metalite {step} failed: {r['cli'][step]['stderr'][-2000:]}"
        )
    _assert_cli_answers_as_the_api(r)
    record(
        results_dir,
        f"x86-{kind}-{name}",
        {
            k: r[k]
            for k in (
                "backend",
                "backend_version",
                "numpy",
                "ms_per_image",
                "fit_seconds",
                "peak_rss_mb",
                "accuracy",
            )
        },
    )


def test_interpreters_agree_on_colour(x86_run, colour_bundle, colour_task, results_dir):
    """tflite-runtime 2.14 and ai-edge-litert agree on the RGB bundle as on the gray ones."""
    name, path = colour_bundle
    a = agreement(
        x86_run("tflite", path, colour_task),
        x86_run("litert", path, colour_task),
        output_scale(path),
    )
    record(results_dir, f"agreement-tflite-vs-litert-{name}", a)
    assert_agreement(
        a,
        f"{name}: tflite-runtime vs ai-edge-litert",
        trained=name != "tiny-rgb",
        same_kernels=False,
    )
