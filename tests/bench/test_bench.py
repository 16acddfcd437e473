"""``metalite bench`` on a tiny real bundle, the TFLite on-device-training baseline, and the README generator.

The bundle (Conv4, 16 filters, random weights) and its model directory are written by the real export /
model-directory writers; the held-out data is a small synthetic ``folder:`` dataset (40 classes of
distinct random stroke patterns, 20 images each), so the test needs no download. Only sanity of values
is asserted, never speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from repo_paths import REPO

from metalite.runtime import head as headlib

SIZE = 28
N_CLASSES = 40
PER_CLASS = 20


def _class_images(c: int, rng: np.random.Generator) -> np.ndarray:
    """``PER_CLASS`` uint8 images (paper 255) of class ``c``: a class-specific set of strokes, jittered."""
    crng = np.random.default_rng(1000 + c)
    segs = crng.integers(4, SIZE - 4, size=(4, 4))
    out = []
    for _ in range(PER_CLASS):
        img = np.full((SIZE, SIZE), 255, np.uint8)
        dy, dx = rng.integers(-1, 2, size=2)
        for y0, x0, y1, x1 in segs:
            n = 30
            ys = np.clip(np.linspace(y0, y1, n).round().astype(int) + dy, 0, SIZE - 1)
            xs = np.clip(np.linspace(x0, x1, n).round().astype(int) + dx, 0, SIZE - 1)
            img[ys, xs] = 0
            img[np.clip(ys + 1, 0, SIZE - 1), xs] = 0
        noise = rng.integers(0, 25, size=img.shape)
        out.append(
            np.clip(img.astype(int) + np.where(img == 0, noise, -noise), 0, 255).astype(np.uint8)
        )
    return np.stack(out)


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("benchdata") / "strokes"
    rng = np.random.default_rng(0)
    for c in range(N_CLASSES):
        d = root / f"class{c:02d}"
        d.mkdir(parents=True)
        for i, img in enumerate(_class_images(c, rng)):
            Image.fromarray(img).save(d / f"{i:02d}.png")
    return f"folder:{root}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, folder_data):
    """(bundle dir, model dir) of a random Conv4-16 backbone with a one-layer linear head."""
    from metalite.export.bundle import write_bundle
    from metalite.export.tfcompat import tf
    from metalite.training.datasets import load_data
    from metalite.training.modeldir import save_model_dir
    from metalite.training.models import build_backbone

    tf.random.set_seed(0)
    bcfg = {"kind": "conv4", "filters": 16, "embedding_dim": 16}
    model = build_backbone(bcfg, input_shape=(SIZE, SIZE, 1))
    rng = np.random.default_rng(0)
    w = (np.eye(16) + 0.1 * rng.standard_normal((16, 16))).astype(np.float32)
    spec = headlib.HeadSpec(
        [(w, np.zeros(16, np.float32))],
        ["linear"],
        {"steps": 5, "lr": 0.01, "scale": 1.0, "adapt": "head"},
    )
    rep = load_data(folder_data, SIZE, "train", progress=False).inputs()[::10][:64]
    base = tmp_path_factory.mktemp("benchmodels")
    bundle = write_bundle(
        base / "bundle",
        model,
        spec,
        rep,
        {"training": {"algorithm": "test", "data": folder_data}},
        progress=False,
    )
    mdir = save_model_dir(
        base / "model",
        {
            "algorithm": "test",
            "data": folder_data,
            "backbone": bcfg,
            "head": {"hidden": [16], "activation": "linear"},
            "input": {"shape": [SIZE, SIZE, 1]},
            "stage": "float",
            "adaptation": spec.adaptation,
        },
        model,
        spec,
    )
    return bundle, mdir


@pytest.fixture(scope="module")
def thin_bundle(tiny, tmp_path_factory, folder_data):
    """The tiny model with half its filters removed (structured pruning), exported as a second bundle."""
    from metalite.export.bundle import write_bundle
    from metalite.training.datasets import load_data
    from metalite.training.modeldir import load_model_dir
    from metalite.training.structured import thin_backbone

    cfg, backbone, spec = load_model_dir(tiny[1])
    thin, _, summary = thin_backbone(backbone, cfg["backbone"], (SIZE, SIZE, 1), 0.5, "l1", "layer")
    rep = load_data(folder_data, SIZE, "train", progress=False).inputs()[::10][:64]
    return write_bundle(
        tmp_path_factory.mktemp("thin") / "bundle",
        thin,
        spec,
        rep,
        {
            "training": {"algorithm": "test", "data": folder_data},
            "compression": {"stage": "pruned", "sparsity": 0.0, "structured": summary},
        },
        progress=False,
    )


@pytest.fixture(scope="module")
def report(tiny, thin_bundle, tmp_path_factory, folder_data):
    from click.testing import CliRunner

    from metalite.tools.cli import main

    bundle, mdir = tiny
    out = tmp_path_factory.mktemp("bench") / "out"
    res = CliRunner().invoke(
        main,
        [
            "bench",
            str(bundle),
            "--quick",
            "--out",
            str(out),
            "--model",
            str(mdir),
            "--pareto",
            str(thin_bundle),
            "--data",
            folder_data,
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_bench_writes_the_five_sections(report):
    out, r = report
    for name in ("machine", "accuracy", "size", "latency", "pareto", "adaptation", "memory"):
        assert name in r, name
    md = (out / "report.md").read_text()
    for name in (
        "## accuracy",
        "## size",
        "## latency",
        "## pareto",
        "## adaptation",
        "## memory",
        "## machine",
        "## Headline",
    ):
        assert name in md
    assert {p.name for p in out.glob("*.png")} == {
        "accuracy.png",
        "latency.png",
        "adaptation.png",
        "size.png",
        "pareto.png",
    }
    m = r["machine"]
    assert m["cores"] >= 1 and m["python"] and "blas" in m and "numpy" in m["libraries"]


@pytest.mark.slow
def test_bench_accuracy_is_sane(report):
    _, r = report
    acc = r["accuracy"]
    assert (
        acc["split"] == "test" and acc["classes"] >= 5
    )  # folder data: the held-out classes of the split
    assert {"float_keras", "float_tflite", "int8_tflite"} <= set(acc["results"])
    for variant, res in acc["results"].items():
        five = res["5way1shot"]
        assert 0.2 < five["mean"] <= 1.0 and 0 <= five["ci95"] < 0.2, (variant, five)
    # 20-way does not fit 6 held-out classes: skipped with a reason, not an error
    assert "20way1shot" in acc["skipped"]
    # float Keras and float TFLite embed identically (same weights), so they score the same episodes alike
    assert (
        abs(
            acc["results"]["float_keras"]["5way1shot"]["mean"]
            - acc["results"]["float_tflite"]["5way1shot"]["mean"]
        )
        < 0.02
    )


@pytest.mark.slow
def test_bench_size_latency_memory_are_sane(report):
    _, r = report
    s = r["size"]
    assert s["int8_tflite"]["bytes"] < s["float_tflite"]["bytes"]
    assert 0 < s["int8_tflite"]["gzip_bytes"] <= s["int8_tflite"]["bytes"] + 64
    assert s["int8_tflite"]["parameters"] == s["float_tflite"]["parameters"] > 0
    assert 0.0 <= s["int8_tflite"]["sparsity"] < 1.0
    # MACs: the same network in float and int8; conv/dense only, so below the tiny model's 16-filter bound
    assert s["int8_tflite"]["macs"] == s["float_tflite"]["macs"] == s["float_keras"]["macs"] > 0
    lat = r["latency"]
    litert = lat["tflite"]["int8_tflite"]["ai_edge_litert"]
    for cell in ("b1_t1", "b32_t1", "b1_t2", "b32_t2"):
        c = litert[cell]
        assert (
            c["median_ms"] > 0 and c["q1_ms"] <= c["median_ms"] <= c["q3_ms"] and c["rounds"] == 5
        )
        assert len(c["round_medians_ms"]) == 5 and c["gmacs_per_s"] > 0
        # interleaved with float TFLite in the same rounds: the ratio within each round is reported
        sp = c["speedup_vs"]["float_tflite"]
        assert sp["rounds"] == 5 and sp["q1"] <= sp["median"] <= sp["q3"]
    load = lat["load"]
    assert (
        set(load) >= {"loadavg_before", "loadavg_after", "busy", "warning"} and load["seconds"] > 0
    )
    assert lat["interpreters"]["tflite_runtime"]["status"]  # subprocess, or why not installed
    assert lat["keras"]["results"]["direct_b1"]["median_ms"] > 0
    mem = r["memory"]["runs"]["ai_edge_litert"]
    assert "error" not in mem, mem
    assert 10 < mem["peak_rss_mib"] < 2000 and mem["tensorflow_imported"] is False
    assert r["headline"]["float_tflite_over_int8_size"] > 1


@pytest.mark.slow
def test_bench_pareto_compares_the_thinner_bundle(report):
    _, r = report
    par = r["pareto"]
    # the synthetic folder data has no drawers: N-way 1-shot held-out episodes stand in for Lake runs
    assert par["protocol"].endswith("way1shot") and par["runs"] == 100
    ref, thin = par["points"]
    assert ref["label"] == "not pruned" and thin["label"] == "50% of filters removed"
    assert (
        thin["widths"] == [8, 8, 8, 16]
        and thin["macs"] < ref["macs"] / 2
        and thin["bytes"] < ref["bytes"]
    )
    assert ref["error_diff"] == 0 and ref["b1_t1"]["speedup"]["median"] == 1.0
    assert 0 <= thin["error"] <= 1 and thin["b1_t1"]["speedup"]["rounds"] == 5
    assert set(par["front"]) == {"optimal", "meets_goal"} and par["front"]["optimal"]
    others = {
        b
        for b, i in r["latency"]["interpreters"].items()
        if i.get("python") and b != par["interpreter"]
    }
    assert (
        set(thin["other_interpreters"]) == others
    )  # every interpreter the latency section found times the bundles too
    for b in others:
        assert thin["other_interpreters"][b]["b1_t1"]["median_ms"] > 0
    best = r["headline"]["pareto_best"]  # the one thinner bundle is the headline's, met goal or not
    assert best["label"] == thin["label"] and best["meets_goal"] == thin["meets_goal"]
    assert (
        best["speedup_b1"] == thin["b1_t1"]["speedup"]["median"]
        and best["reference"] == "not pruned"
    )


@pytest.mark.slow
def test_bench_report_has_no_blanks_or_contradictions(report):
    out, r = report
    md = (out / "report.md").read_text()
    assert "—×" not in md and "n/a×" not in md and "None" not in md
    head = md.split("## machine")[0]
    # every variant is either measured or listed once as not measured, never both
    avail, missing = r["variants"]["available"], r["variants"]["missing"]
    assert not set(avail) & set(missing)
    assert set(missing) == {"pruned_float_tflite", "int8_pruned_tflite"}
    assert "Not measured" in head and head.count("×") >= 3
    assert "- Structured pruning (" in head and "faster per image than not pruned" in head


@pytest.mark.slow
def test_bench_adaptation_compares_every_method(report):
    _, r = report
    res = r["adaptation"]["settings"]["5way5shot"]
    for m in ("metalite", "tflite_odt", "keras_finetune", "pycoral_sgd"):
        assert "skipped" not in res[m], (m, res[m])
        assert 0.0 <= res[m]["accuracy"] <= 1.0
        assert res[m]["embed_ms"] > 0 and res[m]["head_ms"] > 0 and res[m]["total_ms"] > 0
    assert res["tflite_odt"]["loss_last"] < res["tflite_odt"]["loss_first"]
    assert "skipped" in r["adaptation"]["settings"]["20way5shot"]


# ----------------------------------------------------------------------------- ODT model
def test_odt_train_signature_reduces_loss_and_matches_numpy():
    from metalite.bench.odt import ODTRunner, build_odt_model

    rng = np.random.default_rng(0)
    d, ways, shots = 12, 5, 4
    spec = headlib.HeadSpec(
        [(rng.standard_normal((d, 8)).astype(np.float32) * 0.5, np.zeros(8, np.float32))],
        ["relu"],
        {"steps": 0, "lr": 0.1, "scale": 0.05, "adapt": "classifier"},
    )
    centers = rng.standard_normal((ways, d))
    y = np.repeat(np.arange(ways), shots)
    x = (centers[y] + rng.standard_normal((len(y), d))).astype(np.float32)
    onehot = np.eye(ways, dtype=np.float32)[y]
    odt = ODTRunner(build_odt_model(spec, d, ways))
    first = odt.init(x, onehot)
    losses = [
        odt.train(x, onehot, 0.05) for _ in range(20)
    ]  # each returns the loss before its step
    assert losses[0] == pytest.approx(first, rel=1e-5)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.95 * losses[0], losses
    # 20 train calls = runtime.head.adapt with adapt="classifier", 20 steps, same lr (the numpy device contract)
    ref = headlib.adapt(spec, x, y, ways, steps=20, lr=0.05)
    np.testing.assert_allclose(odt.infer(x), ref.logits(x), rtol=1e-3, atol=1e-3)


def test_odt_model_needs_no_flex_ops():
    from metalite.bench.odt import build_odt_model
    from metalite.export.flatbuf import read_model

    spec = headlib.HeadSpec([], [], {"steps": 0, "lr": 0.1, "scale": 1.0, "adapt": "head"})
    ops = {op.name for op in read_model(build_odt_model(spec, 8, 3), "odt").ops}
    assert not any(o.startswith("Flex") or o == "CUSTOM" for o in ops), ops


# ----------------------------------------------------------------------------- README section
def _fake_report():
    cell = {
        "median_ms": 0.5,
        "gmacs_per_s": 2.0,
        "speedup_vs": {"float_tflite": {"median": 4.0, "q1": 3.9, "q3": 4.1}},
    }
    return {
        "mode": "full",
        "machine": {"cpu": "Test CPU", "cores": 2, "python": "3.11"},
        "variants": {
            "available": {
                "int8_tflite": {"source": "bundle backbone.tflite", "label": "int8 TFLite"},
                "float_tflite": {"source": "converted", "label": "float TFLite"},
            }
        },
        "latency": {
            "tflite": {
                "int8_tflite": {"ai_edge_litert": {"b1_t1": cell, "b32_t1": {"median_ms": 0.25}}},
                "float_tflite": {"ai_edge_litert": {"b1_t1": {"median_ms": 2.0}}},
            },
            "keras": {
                "results": {"tffunction_b1": {"median_ms": 10.0}, "direct_b32": {"median_ms": 1.0}}
            },
            "load": {
                "loadavg_before": [0.1, 0.2, 0.3],
                "other_processes_cores": 0.05,
                "busy": False,
                "warning": None,
            },
        },
        "size": {
            "int8_tflite": {"bytes": 1000, "gzip_bytes": 900, "macs": 1000000},
            "float_tflite": {"bytes": 4000, "macs": 1000000},
        },
        "accuracy": {"results": {"int8_tflite": {"5way1shot": {"mean": 0.9, "ci95": 0.01}}}},
        "adaptation": {
            "settings": {
                "20way5shot": {
                    "metalite": {"total_ms": 10.0, "accuracy": 0.8},
                    "pycoral_sgd": {"total_ms": 50.0, "accuracy": 0.7},
                }
            }
        },
        "memory": {"runs": {"ai_edge_litert": {"peak_rss_mib": 50.0}}},
    }


def test_readme_section_writes_only_between_markers(tmp_path):
    from metalite.bench.readme import END, START, main, update_readme

    before, after = "# Title\n\nintro ✓ text\n\n", "\n\n## Later\nkeep me\n"
    readme = tmp_path / "README.md"
    readme.write_text(f"{before}{START}\nold stuff\n{END}{after}", encoding="utf-8")
    rep = tmp_path / "report.json"
    rep.write_text(json.dumps(_fake_report()))
    assert update_readme(readme, rep, plot="bench/latency.png") is True
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(before + START + "\n") and text.endswith(END + after)
    body = text[len(before) + len(START) : text.index(END)]
    assert "old stuff" not in body
    assert (
        "4.00× faster" in body
        and "20.0× faster" in body
        and "4.0× smaller" in body
        and "5.0× faster" in body
    )
    assert (
        "load average 0.10/0.20/0.30" in body
        and "Warning" not in body
        and "![latency](bench/latency.png)" in body
    )
    assert update_readme(readme, rep, plot="bench/latency.png") is False  # idempotent
    assert (
        main(
            [
                "--readme",
                str(readme),
                "--report",
                str(rep),
                "--plot",
                "bench/latency.png",
                "--check",
            ]
        )
        == 0
    )

    no_markers = tmp_path / "OTHER.md"
    no_markers.write_text("nothing here\n")
    with pytest.raises(ValueError):
        update_readme(no_markers, rep)
    assert no_markers.read_text() == "nothing here\n"


@pytest.mark.slow
def test_bench_quick_on_the_shipped_omniglot_bundle(tmp_path):
    """The shipped bundle benchmarks end to end (CI runs it), on the Omniglot fixture of
    tests/data/omniglot (its held-out split is the fixture's own: Greek, one of the bundle's training alphabets)."""
    from click.testing import CliRunner

    from metalite.tools.cli import main

    root = REPO
    o = root / "tests" / "data" / "omniglot"
    data = f"omniglot:{o / 'mini1.zip'},{o / 'mini2.zip'}"
    res = CliRunner().invoke(
        main,
        [
            "bench",
            str(root / "models" / "omniglot"),
            "--quick",
            "--data",
            data,
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "report.json").read_text())
    for section in ("accuracy", "size", "latency", "adaptation", "memory"):
        assert rep[section], section
    assert (tmp_path / "report.md").exists()


# ----------------------------------------------------------------------------- timing machinery
def test_interleave_rotates_the_order_and_ratios_are_within_rounds():
    from metalite.bench.latency import ratio_stats
    from metalite.bench.timing import interleave_calls, summarize_rounds

    order = []
    fns = {n: (lambda n=n: order.append(n)) for n in "ABC"}
    res = interleave_calls(fns, rounds=3, calls=2, warmup=1, per=4)
    assert set(res) == set("ABC") and all(len(v) == 3 and min(v) >= 0 for v in res.values())
    timed = order[3:]  # after one warm-up call each
    firsts = [timed[i * 6] for i in range(3)]  # each round: 3 models x 2 calls
    assert firsts == ["A", "B", "C"]
    s = summarize_rounds([1.0, 2.0, 3.0, 4.0])
    assert s["median_ms"] == 2.5 and s["q1_ms"] == 1.75 and s["rounds"] == 4
    # a slow round slows both models alike: the within-round ratio does not move
    r = ratio_stats([2.0, 20.0, 2.0], [1.0, 10.0, 1.0])
    assert r["median"] == r["q1"] == r["q3"] == 2.0


def test_load_report_warns_only_when_others_use_the_cpu():
    from metalite.bench.machine import LoadWatch, load_report

    busy = load_report([3.0, 2.5, 2.0], [3.2, 2.6, 2.0], 1.5, 10.0)
    assert busy["busy"] and "1.5 of" in busy["warning"] and "3.00/2.50/2.00" in busy["warning"]
    idle = load_report([0.1, 0.1, 0.1], [0.9, 0.3, 0.1], 0.02, 10.0)
    assert not idle["busy"] and idle["warning"] is None
    assert load_report([2.0, 1.0, 1.0], None, None, 1.0)[
        "busy"
    ]  # no /proc/stat: the load average decides
    with LoadWatch() as w:
        sum(range(10000))
    assert set(w.result) >= {
        "loadavg_before",
        "loadavg_after",
        "other_processes_cores",
        "busy",
        "warning",
    }


@pytest.mark.slow
def test_macs_of_a_tflite_model_match_the_keras_count():
    from metalite.bench.cost import gmacs_per_s, keras_macs, tflite_macs
    from metalite.export.tflite import convert_float
    from metalite.training.models import build_backbone

    m = build_backbone({"kind": "conv4", "filters": 8, "embedding_dim": 4}, (28, 28, 1))
    expected = 28 * 28 * 8 * 9 + 14 * 14 * 8 * 72 + 7 * 7 * 8 * 72 + 3 * 3 * 4 * 72
    assert keras_macs(m) == tflite_macs(convert_float(m)) == expected
    assert gmacs_per_s(2_000_000, 1.0) == pytest.approx(2.0) and gmacs_per_s(None, 1.0) is None


@pytest.mark.slow
def test_variants_are_named_for_what_they_are(tmp_path):
    from metalite.bench.variants import compression_of, describe, fake_quant_ops, is_compressed
    from metalite.export.tfcompat import tf
    from metalite.export.tflite import convert_float
    from metalite.training.models import build_backbone

    # a graph with QUANTIZE/DEQUANTIZE ops in it is not a float model, whatever its file name says
    m = build_backbone({"kind": "conv4", "filters": 4, "embedding_dim": 4}, (28, 28, 1))
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: (
        [np.random.default_rng(0).random((1, 28, 28, 1), np.float32)] for _ in range(4)
    )
    (tmp_path / "q.tflite").write_bytes(
        conv.convert()
    )  # int8 inside, float in and out: QUANTIZE + DEQUANTIZE
    (tmp_path / "f.tflite").write_bytes(convert_float(m))
    assert fake_quant_ops(tmp_path / "q.tflite") >= 2 and fake_quant_ops(tmp_path / "f.tflite") == 0
    thin = {
        "compression": {
            "stage": "pqat",
            "pqat": True,
            "sparsity": 0.5,
            "structured": {"fraction": 0.5, "widths": [32, 32, 32, 64]},
        }
    }
    c = compression_of(thin)
    assert c["structured"] == 0.5 and c["widths"] == [32, 32, 32, 64] and is_compressed(thin)
    assert describe(c) == "50% of filters removed + 50% sparse"
    plain = {"compression": {"stage": "float"}, "backbone": {"weight_sparsity": 0.01}}
    assert describe(compression_of(plain)) == "not pruned" and not is_compressed(plain)


def test_workers_time_relative_paths_and_report_a_model_they_cannot_open(tmp_path, monkeypatch):
    """A bundle named relative to the caller's directory is timed (workers run elsewhere), and a file the
    interpreter cannot open is reported for that model alone instead of killing the run."""
    import sys

    from metalite.bench.latency import run_interleaved

    monkeypatch.chdir(REPO)
    bad = tmp_path / "not_a_model.tflite"
    bad.write_bytes(b"not a flatbuffer")
    models = {"rel": "models/glyphs/backbone.tflite", "bad": str(bad)}
    got, _ = run_interleaved(
        {"ai_edge_litert": sys.executable},
        models,
        [(1, 1)],
        {"rounds": 2, "calls": 2, "warmup": 1},
        tmp_path,
        None,
    )
    res = got["results"]
    assert len(res["rel"]["ai_edge_litert"]["b1_t1"]["round_medians_ms"]) == 2
    assert "error" in res["bad"]["ai_edge_litert"]


def test_workers_get_an_absolute_runtime_site_from_a_relative_work_dir(tmp_path, monkeypatch):
    """``bench --out`` relative (as in the README): the workers' PYTHONPATH and stderr files must still resolve
    from the directory they run in (a relative one made tflite-runtime import the wrong code and fail)."""
    import sys

    from metalite.bench import latency as sec

    seen = []
    real = sec.serve_worker
    monkeypatch.setattr(
        sec,
        "serve_worker",
        lambda py, be, site, err: seen.append((site, err)) or real(py, be, site, err),
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    model = str(REPO / "models" / "glyphs" / "backbone.tflite")
    got, _ = sec.run_interleaved(
        {"ai_edge_litert": sys.executable},
        {"m": model},
        [(1, 1)],
        {"rounds": 1, "calls": 1, "warmup": 0},
        "out",
        None,
    )
    assert "b1_t1" in got["results"]["m"]["ai_edge_litert"]
    assert seen and all(Path(site).is_absolute() and Path(err).is_absolute() for site, err in seen)
