"""Compression (training/compress.py, `metalite compress`): pruning, PQAT, int8 conversion, reports, errors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from training_kit import make_folder

pytestmark = (
    pytest.mark.slow
)  # every test uses the module's trained and PQAT-compressed model (minutes to make)

TINY = {
    "backbone": {"kind": "conv4", "filters": 8, "embedding_dim": 8},
    "head": {"hidden": [8], "activation": "linear"},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("compress")
    mp.setenv("METALITE_CACHE", str(root / "cache"))
    folder = make_folder(root / "folder", classes=12, per_class=8)
    from metalite.training.trainer import train

    settings = {
        "data": f"folder:{folder}",
        "steps": 6,
        "ways": 3,
        "shots": 1,
        "queries": 2,
        "val_every": 100,
        "val_episodes": 5,
        "checkpoint_every": 100,
        **TINY,
    }
    train(root / "float", settings, progress=False, log=lambda m: None)
    yield {"root": root, "folder": folder, "float": root / "float"}
    mp.undo()


@pytest.fixture(scope="module")
def pqat(env):
    from metalite.training.compress import compress

    out = env["root"] / "pqat"
    report = compress(
        env["float"],
        out,
        sparsity=0.5,
        prune_steps=9,
        qat_steps=3,
        episodes=10,
        eval_ways=(5, 20),
        progress=False,
        log=lambda m: None,
    )
    return out, report


def _conv_kernel_sparsity(model):
    """Exact-zero fraction of each conv kernel, plus one weight's worth: TF-MOT rounds the number of zeros."""
    return {
        l.name: float(np.mean(l.kernel.numpy() == 0)) + 1.0 / l.kernel.shape.num_elements()
        for l in model.layers
        if type(l).__name__ == "Conv2D"
    }


def test_pruning_reaches_target_and_survives_pqat_and_int8(env, pqat):
    from metalite.export.flatbuf import read_model
    from metalite.export.tflite import convert_int8, is_quantize_annotated
    from metalite.training.datasets import load_data
    from metalite.training.modeldir import load_model_dir, load_pruned_float
    from metalite.training.pruning import qat_effective_kernels

    out, report = pqat
    _, pruned, _ = load_pruned_float(out)
    sp = _conv_kernel_sparsity(pruned)
    assert len(sp) == 4 and all(s >= 0.5 - 1e-9 for s in sp.values()), sp
    # BatchNorm is never pruned
    assert all(
        r["sparsity"] == 0
        for r in report["layers"]
        if "_bn/" in r["name"] and "moving" not in r["name"] and r["name"].endswith("gamma")
    )
    cfg, backbone, _ = load_model_dir(out)
    assert cfg["stage"] == "pqat" and is_quantize_annotated(backbone)
    eff = qat_effective_kernels(backbone)
    assert len(eff) == 4 and all(np.mean(k == 0) >= 0.5 for k in eff.values())
    reps = load_data(f"folder:{env['folder']}", 28, "train", progress=False).inputs()[:20]
    m = read_model(convert_int8(backbone, reps))
    convs = [m.tensors[op.inputs[1]] for op in m.ops if op.name == "CONV_2D"]
    assert len(convs) == 4
    for t in convs:
        assert t.dtype == "INT8" and np.mean(t.data == 0) >= 0.5, (t.name, np.mean(t.data == 0))
    assert report["tflite"]["sparsity"] >= 0.5


def test_report_and_config_structure(pqat):
    from metalite.training.compress import format_report
    from metalite.training.modeldir import read_config

    out, report = pqat
    saved = json.loads((out / "compression_report.json").read_text())
    assert saved["stage"] == "pqat" and saved["sparsity"] == 0.5
    assert set(saved["stages"]) == {"float", "pruned", "pqat", "int8_tflite", "float_int8"}
    # 20-way is clamped to what the held-out folder classes hold; each setting once
    keys = list(saved["stages"]["float"])
    assert keys and len(keys) == len(set(keys))
    for stage in saved["stages"].values():
        for k, acc in stage.items():
            assert (
                0.0 <= acc["mean"] <= 1.0
                and acc["episodes"] == 10
                and k == f"{acc['ways']}way{acc['shots']}shot"
            )
    row = saved["layers"][0]
    assert set(row) >= {"name", "shape", "weights", "sparsity", "pruned"} and row["weights"] == int(
        np.prod(row["shape"])
    )
    cfg = read_config(out)
    comp = cfg["compression"]
    assert comp["sparsity"] == 0.5 and comp["pqat"] is True and comp["distill"] is None
    assert comp["steps"] == {"structured": 0, "prune": 9, "qat": 3} and set(comp["stages"]) == set(
        saved["stages"]
    )
    assert comp["structured"] is None
    assert cfg["algorithm"] == "protonet" and cfg["backbone"] == TINY["backbone"]
    text = format_report(report)
    assert "block1_conv/kernel" in text and "int8_tflite" in text


def test_load_compressed_round_trip_gives_same_embeddings(env, tmp_path):
    from metalite.training import pruning as C
    from metalite.training.algorithms import make_learner
    from metalite.training.datasets import load_data
    from metalite.training.episodes import EpisodeSampler
    from metalite.training.loop import run_episodes
    from metalite.training.modeldir import (
        PRUNED_WEIGHTS,
        head_spec_from_keras,
        load_model_dir,
        read_config,
        save_model_dir,
    )
    from metalite.training.models import build_head

    cfg, student, spec = load_model_dir(env["float"])
    data = load_data(f"folder:{env['folder']}", 28, "train", progress=False)
    sampler = EpisodeSampler(data, 3, 1, 2, seed=0)
    head = build_head(cfg["head"], 8)
    head.set_weights([a for wb in spec.weights for a in wb])
    wrapped = C.prune_wrap(student, 0.6, 4)
    learner = make_learner("protonet", wrapped, head)
    run_episodes(learner, sampler, 4, 1e-3, hooks=C.PruningSchedule(wrapped))
    C.finish_pruning(wrapped)
    assert all(s >= 0.6 - 1e-9 for s in _conv_kernel_sparsity(student).values())
    student.save_weights(str(tmp_path / PRUNED_WEIGHTS))
    q = C.quantize_pqat(student)
    run_episodes(make_learner("protonet", q, head), sampler, 2, 1e-3)
    x = data.inputs()[:10]
    before = q(x, training=False).numpy()
    new_cfg = {
        **{
            k: v
            for k, v in read_config(env["float"]).items()
            if k not in ("format", "format_version")
        },
        "stage": "pqat",
    }
    out = tmp_path / "m"
    save_model_dir(
        out,
        new_cfg,
        q,
        head_spec_from_keras(head, "linear", cfg["adaptation"]),
        extra_files={PRUNED_WEIGHTS: tmp_path / PRUNED_WEIGHTS},
    )
    _, loaded, spec2 = load_model_dir(out)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), before)
    np.testing.assert_allclose(spec2.weights[0][0], head.layers[0].kernel.numpy())


def test_cli_no_qat_distill_and_errors(env, pqat, tmp_path):
    from metalite.tools.cli import main

    r = CliRunner()
    out = tmp_path / "pruned"
    res = r.invoke(
        main,
        [
            "compress",
            str(env["float"]),
            "--out",
            str(out),
            "--no-qat",
            "--distill",
            "--sparsity",
            "0.3",
            "--prune-steps",
            "4",
            "--episodes",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "block4_conv/kernel" in res.output and "pruned" in res.output
    from metalite.training.modeldir import load_model_dir

    cfg, backbone, _ = load_model_dir(out)
    assert (
        cfg["stage"] == "pruned"
        and cfg["compression"]["distill"] == "mse"
        and cfg["compression"]["pqat"] is False
    )
    assert all(s >= 0.3 - 1e-9 for s in _conv_kernel_sparsity(backbone).values())

    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        (
            ["compress", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
            "no such model directory",
        ),
        (
            ["compress", str(env["folder"]), "--out", str(tmp_path / "o")],
            "not a metalite model directory",
        ),
        (
            ["compress", str(env["float"]), "--out", str(tmp_path / "o"), "--sparsity", "1.0"],
            "[0, 1)",
        ),
        (
            ["compress", str(env["float"]), "--out", str(tmp_path / "o"), "--sparsity", "-0.1"],
            "[0, 1)",
        ),
        (["compress", str(env["float"]), "--out", str(blocker / "sub")], "cannot write there"),
        (["compress", str(env["float"]), "--out", str(env["float"])], "must differ"),
        (
            ["compress", str(env["float"]), "--out", str(out)],
            "pass --force to replace it",
        ),  # the rule of export
        (["compress", str(pqat[0]), "--out", str(tmp_path / "o")], "already compressed"),
        (
            ["compress", str(env["float"]), "--out", str(tmp_path / "o"), "--structured", "1.5"],
            "[0, 1)",
        ),
        (
            [
                "compress",
                str(env["float"]),
                "--out",
                str(tmp_path / "o"),
                "--structured",
                "0.5,0.5",
                "--structured-scope",
                "global",
            ],
            "per-layer",
        ),
        (
            [
                "compress",
                str(env["float"]),
                "--out",
                str(tmp_path / "o"),
                "--sparsity",
                "0",
                "--no-qat",
            ],
            "nothing to do",
        ),
    ]
    for args, msg in cases:
        res = r.invoke(main, args)
        assert res.exit_code != 0 and msg in res.output, (args, res.output)
        assert "Traceback" not in res.output
        assert not (tmp_path / "o").exists()


def test_export_float_of_a_pqat_model_is_a_real_float_model_and_inspect_says_what_each_file_is(
    env, pqat, tmp_path
):
    """--float writes the PQAT weights in float32 (masks applied, no fake quantization), which agrees with the
    int8 backbone; inspect names it for what it is and calls the held-out classes the same everywhere."""
    from metalite.export.flatbuf import read_model
    from metalite.export.inspect import inspect_bundle, render_text
    from metalite.export.tflite import interpreter, run_int8
    from metalite.tools.cli import main
    from metalite.training.datasets import load_data

    out, _ = pqat
    res = CliRunner().invoke(
        main,
        [
            "export",
            str(out),
            "--out",
            str(tmp_path / "b"),
            "--float",
            "--quiet",
            "--eval-episodes",
            "5",
        ],
    )
    assert res.exit_code == 0, res.output
    raw = (tmp_path / "b" / "backbone_float.tflite").read_bytes()
    ops = {op.name for op in read_model(raw).ops}
    assert not ops & {"QUANTIZE", "DEQUANTIZE"} and "CONV_2D" in ops
    x = load_data(f"folder:{env['folder']}", 28, "test").inputs()[:16]
    it = interpreter(raw, batch=len(x))
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    f = it.get_tensor(it.get_output_details()[0]["index"])
    q = run_int8((tmp_path / "b" / "backbone.tflite").read_bytes(), x)
    cos = (f * q).sum(1) / (np.linalg.norm(f, axis=1) * np.linalg.norm(q, axis=1))
    assert cos.min() > 0.95, cos
    info = inspect_bundle(tmp_path / "b")
    assert (
        info["models"]["backbone_float.tflite"]["weights"]["sparsity"] >= 0.45
    )  # its kernels keep the zeros
    text = render_text(info)
    assert "backbone_float.tflite: float32, no quantization" in text
    assert "{" not in text and "(val classes)" not in text and "(test classes)" not in text
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert (
        manifest["training"]["data"] == "folder:folder"
    )  # file names only, no path of this machine
    labels = [a["data"] for a in manifest["accuracy"].values() if "data" in a]
    assert labels and all(
        d in ("folder:folder (held-out test classes)", "folder:folder (validation classes)")
        for d in labels
    ), labels


def test_structured_pruning_composes_with_sparsity_pqat_and_int8(env, tmp_path):
    """--structured 0.5 then 50% sparsity then PQAT: a thinner backbone (widths in the config), rebuilt by
    load_model_dir, still sparse after int8 conversion, with fewer MACs than the float model; export --float
    writes the thin float twin."""
    from metalite.bench.cost import keras_macs, tflite_macs
    from metalite.export.flatbuf import read_model
    from metalite.export.tflite import convert_int8
    from metalite.tools.cli import main
    from metalite.training.compress import compress
    from metalite.training.datasets import load_data
    from metalite.training.modeldir import load_model_dir, load_pruned_float

    out = env["root"] / "thin"
    report = compress(
        env["float"],
        out,
        sparsity=0.5,
        structured=0.5,
        structured_steps=3,
        prune_steps=6,
        qat_steps=2,
        episodes=5,
        progress=False,
        log=lambda m: None,
    )
    assert {"thinned", "structured", "pruned", "pqat", "int8_tflite"} <= set(report["stages"])
    cfg, backbone, spec = load_model_dir(out)
    assert cfg["stage"] == "pqat" and cfg["backbone"]["widths"] == [4, 4, 4, 8]
    st = cfg["compression"]["structured"]
    assert (
        st["fraction"] == 0.5
        and st["widths_before"] == [8, 8, 8, 8]
        and st["filters_removed"] == 12
    )
    _, pruned, _ = load_pruned_float(out)
    kernels = [l.kernel.numpy() for l in pruned.layers if type(l).__name__ == "Conv2D"]
    assert [k.shape[-1] for k in kernels] == [4, 4, 4, 8] and [k.shape[2] for k in kernels] == [
        1,
        4,
        4,
        4,
    ]
    assert all(np.mean(k == 0) >= 0.5 - 1.0 / k.size for k in kernels)
    reps = load_data(f"folder:{env['folder']}", 28, "train").inputs()[:20]
    data = convert_int8(backbone, reps)
    assert len([op for op in read_model(data).ops if op.name == "CONV_2D"]) == 4
    _, float_backbone, _ = load_model_dir(env["float"])
    assert tflite_macs(data) == keras_macs(pruned) < keras_macs(float_backbone) / 2
    assert spec.weights[0][0].shape[0] == 8  # the embedding keeps its width: the head is unchanged
    res = CliRunner().invoke(
        main,
        [
            "export",
            str(out),
            "--out",
            str(tmp_path / "b"),
            "--float",
            "--quiet",
            "--eval-episodes",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["compression"]["structured"]["widths"] == [4, 4, 4, 8]
    assert manifest["edgetpu"]["ready"], manifest["edgetpu"]
    assert tflite_macs((tmp_path / "b" / "backbone_float.tflite").read_bytes()) == keras_macs(
        pruned
    )
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "12 of 24 filters removed" in res.output and "[8, 8, 8, 8] -> [4, 4, 4, 8]" in res.output
    assert (
        "widths [4, 4, 4, 8]" in res.output
        and "fine-tuned 3 (structured) + 6 (pruning) + 2 (QAT) steps" in res.output
    )


def test_freeze_bn_keeps_the_batchnorm_through_pruning_and_pqat_and_the_model_loads(env, tmp_path):
    """``compress(freeze_bn=True)``: the compressed model's BatchNorm statistics are the float model's (without
    it PQAT's episodes move them; scale and offset learn in PQAT either way, the quantization wrapper trains
    them), and it loads back (frozen layers are saved as built)."""
    from metalite.training.compress import compress
    from metalite.training.modeldir import load_model_dir

    def bn(
        model,
    ):  # {block1_bn/moving_mean:0: values, ...}: the BatchNorm statistics, wrapped or not
        names = ("moving_mean:0", "moving_variance:0")
        return {w.name: w.numpy() for w in model.weights if w.name.endswith(names)}

    _, float_bb, _ = load_model_dir(env["float"])
    for freeze in (True, False):
        out = tmp_path / f"pqat-{freeze}"
        compress(
            env["float"],
            out,
            sparsity=0.5,
            prune_steps=4,
            qat_steps=4,
            episodes=5,
            eval_ways=(5,),
            int8_check=False,
            progress=False,
            log=lambda m: None,
            freeze_bn=freeze,
        )
        _, q, _ = load_model_dir(out)
        got, want = bn(q), bn(float_bb)
        assert sorted(got) == sorted(want) and len(want) == 8, (sorted(got), sorted(want))
        assert all(np.array_equal(got[n], want[n]) for n in want) == freeze, freeze


def test_the_distillation_teacher_shifts_images_as_the_runtime_does():
    """``distill.shift_images`` (TensorFlow, inside the training step) moves pixels exactly as
    ``runtime.tta.shifted`` (numpy, on the device), for every shift the runtime averages over."""
    from metalite.export.tfcompat import tf
    from metalite.runtime.tta import SHIFTS, shifted
    from metalite.training.distill import shift_images

    x = np.random.default_rng(0).random((3, 7, 5, 2)).astype(np.float32)
    for dy, dx in SHIFTS[8]:
        got = shift_images(tf.constant(x), dy, dx).numpy()
        assert np.array_equal(got, shifted(x, dy, dx)), (dy, dx)
        assert not np.array_equal(got, x)


def test_distilling_the_shift_average_fine_tunes_first_and_is_recorded(env, tmp_path):
    """``--distill --distill-shifts 8 --distill-steps N``: a distilled fine-tuning stage on the float model
    (its own accuracy row), recorded in the config and shown by ``inspect``; the teacher's target is its
    embedding averaged over the image and its 8 shifts, which a student exported with tta 0 then matches
    in one backbone run (the loss is zero for the teacher itself only without shifts)."""
    from metalite.export.tfcompat import tf
    from metalite.runtime.tta import shift_average
    from metalite.tools.cli import main
    from metalite.training.distill import make_distill_loss
    from metalite.training.modeldir import load_model_dir

    _, teacher, _ = load_model_dir(env["float"])
    x = np.random.default_rng(1).random((6, 28, 28, 1)).astype(np.float32)
    e = teacher(x, training=False)
    for shifts in (0, 8):
        aux = make_distill_loss("mse", teacher, None, None, 3, 3, 1, 1.0, shifts=shifts)
        target = shift_average(lambda b: teacher(b, training=False).numpy(), x, shifts)
        want = np.mean((e.numpy() - target) ** 2) / np.mean(target**2)
        assert float(aux(e, tf.constant(x))) == pytest.approx(want, rel=1e-4, abs=1e-7), shifts
        assert (want == 0) == (shifts == 0)

    out = tmp_path / "sd"
    r = CliRunner().invoke(
        main,
        [
            "compress",
            str(env["float"]),
            "--out",
            str(out),
            "--sparsity",
            "0",
            "--distill",
            "--distill-shifts",
            "8",
            "--distill-steps",
            "4",
            "--qat-steps",
            "2",
            "--episodes",
            "5",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "distilled" in r.output
    cfg = json.loads((out / "config.json").read_text())
    assert (
        cfg["compression"]["distill_shifts"] == 8 and cfg["compression"]["steps"]["distill"] == 4
    ), cfg["compression"]
    assert "distilled" in cfg["compression"]["stages"]
    from metalite.export.inspect import (
        _compression_lines,  # what ``inspect`` prints of a bundle made from it
    )

    shown = "\n".join(_compression_lines({"stage": cfg["stage"], **cfg["compression"]}))
    assert (
        "2 (QAT)" in shown and "4 (distillation)" in shown and "averaged over 8 shifts" in shown
    ), shown
    r = CliRunner().invoke(
        main,
        [
            "compress",
            str(env["float"]),
            "--out",
            str(tmp_path / "x"),
            "--sparsity",
            "0",
            "--distill-steps",
            "4",
        ],
    )
    assert r.exit_code != 0 and "need --distill" in r.output and not (tmp_path / "x").exists(), (
        r.output
    )
