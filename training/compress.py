"""Compression of a meta-trained model: structured pruning (whole filters removed, ``training.structured``),
magnitude pruning, then pruning-preserving QAT (PQAT), each optional but one, optionally distilled from the
float model, each stage fine-tuned with the model's own episodic meta-objective (``metalite.training.loop``)
and measured on the held-out test classes with the same episodes.

``compress(model_dir, out, ...)`` writes a model directory with ``"stage": "pqat"`` (or ``"pruned"``) that
``metalite export`` converts to a sparse full-integer int8 TFLite backbone; what it holds and how it
reloads: ``metalite.training.modeldir``. ``compression_report.json`` holds per weight tensor its
shape, #weights and sparsity, the accuracy after each stage and the int8 TFLite's size and stored sparsity.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from metalite.common.files import atomic_write_text, replace_refusal
from metalite.common.progress import as_progress

from .datasets import HELDOUT_SPLIT, describe_split, portable_spec, representative_inputs
from .distill import DISTILL_LOSSES, make_distill_loss
from .errors import CompressError
from .loop import run_episodes
from .modeldir import (
    PRUNED_WEIGHTS,
    head_spec_from_keras,
    load_model_dir,
    read_config,
    save_model_dir,
)
from .models import freeze_batchnorm, thaw
from .pruning import PruningSchedule, finish_pruning, prune_wrap, quantize_pqat, weight_report
from .settings import hparams_of
from .structured import parse_fractions, thin_backbone

DEFAULTS = {
    "sparsity": 0.5,
    "prune_steps": 300,
    "qat_steps": 150,
    "qat": True,
    "distill": False,
    "distill_loss": "mse",
    "lr": None,
    "seed": 0,
    "episodes": 200,
    "eval_ways": (5, 20),
    "eval_shots": 1,
    "structured": 0.0,
    "structured_score": "l1",
    "structured_scope": "layer",
    "structured_steps": 600,
    "structured_multiple": 16,
}
QAT_LR = 0.3  # PQAT fine-tunes at this fraction of the pruning learning rate
REPORT = "compression_report.json"
EVAL_SEED = 1234  # the same episodes for every stage


def check_sparsity(sparsity) -> float:
    """``sparsity`` as a float in [0, 1); CompressError otherwise."""
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise CompressError(f"--sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= s < 1.0) or math.isnan(s):
        raise CompressError(
            f"--sparsity must be in [0, 1) (fraction of weights set to zero), got {sparsity}"
        )
    return s


def _check_out(out: Path, model_dir: Path, overwrite: bool) -> None:
    if out.resolve() == model_dir.resolve():
        raise CompressError(f"{out}: --out must differ from the input model directory")
    refusal = replace_refusal(out, overwrite, "config.json", "model directory")
    if refusal:
        raise CompressError(refusal)
    parent = out.parent if out.parent != Path("") else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise CompressError(f"{out}: cannot write there ({e.strerror or e})") from None


@dataclass
class Plan:
    """Everything ``compress`` does, checked before TensorFlow is imported."""

    model_dir: Path
    out: Path
    cfg: dict
    sparsity: float
    prune_steps: int
    qat_steps: int
    qat: bool
    distill: str | None
    ways: int
    shots: int
    queries: int
    lr: float | None
    seed: int
    episodes: int
    eval_ways: tuple
    structured: float | list = (
        0.0  # fraction of filters removed (or one per conv layer but the last)
    )
    structured_score: str = "l1"
    structured_scope: str = "layer"
    structured_steps: int = 600
    structured_multiple: int = 16
    distill_shifts: int = (
        0  # the teacher's target: its embedding averaged over this many one-pixel shifts too
    )
    distill_steps: int = (
        0  # episodes of distilled fine-tuning of the float student before pruning and PQAT
    )

    @property
    def stage(self) -> str:
        return "pqat" if self.qat else "pruned"

    @property
    def thinning(self) -> bool:
        return _removes_filters(self.structured)


def _removes_filters(fraction) -> bool:
    return any(f > 0 for f in (fraction if isinstance(fraction, list) else [fraction]))


def plan(
    model_dir,
    out,
    sparsity=0.5,
    prune_steps=None,
    qat_steps=None,
    qat=True,
    distill=False,
    distill_loss="mse",
    ways=None,
    shots=None,
    queries=None,
    lr=None,
    seed=0,
    episodes=200,
    eval_ways=(5, 20),
    structured=0.0,
    structured_score="l1",
    structured_scope="layer",
    structured_steps=None,
    structured_multiple=16,
    overwrite=True,
    distill_shifts=0,
    distill_steps=0,
) -> Plan:
    """Check the arguments and the input model; CompressError/ModelDirError naming the problem."""
    from metalite.runtime.tta import SHIFTS

    sparsity = check_sparsity(sparsity)
    thin = _check_structured(
        structured, structured_score, structured_scope, structured_steps, structured_multiple
    )
    if sparsity == 0 and not qat and not _removes_filters(thin[0]) and not distill_steps:
        raise CompressError("nothing to do: --sparsity 0, no --structured and --no-qat")
    model_dir, out = Path(model_dir), Path(out)
    cfg = read_config(model_dir)
    if cfg.get("stage", "float") != "float":
        raise CompressError(
            f"{model_dir}: already compressed (stage {cfg.get('stage')!r}); compress the float model"
        )
    _check_out(out, model_dir, overwrite)
    prune_steps = DEFAULTS["prune_steps"] if prune_steps is None else int(prune_steps)
    qat_steps = DEFAULTS["qat_steps"] if qat_steps is None else int(qat_steps)
    if prune_steps < 1 or qat_steps < 0:
        raise CompressError(
            f"--prune-steps must be >= 1 and --qat-steps >= 0 (got {prune_steps}, {qat_steps})"
        )
    if distill and distill_loss not in DISTILL_LOSSES:
        raise CompressError(
            f"unknown distillation loss {distill_loss!r}; choose one of {', '.join(DISTILL_LOSSES)}"
        )
    if (distill_shifts or distill_steps) and not distill:
        raise CompressError(
            "--distill-shifts and --distill-steps need --distill (they say what the teacher teaches)"
        )
    if isinstance(distill_shifts, bool) or distill_shifts not in SHIFTS:
        raise CompressError(
            f"--distill-shifts must be one of {', '.join(map(str, sorted(SHIFTS)))}, "
            f"got {distill_shifts!r}"
        )
    if isinstance(distill_steps, bool) or not isinstance(distill_steps, int) or distill_steps < 0:
        raise CompressError(f"--distill-steps must be an integer >= 0, got {distill_steps!r}")
    if lr is not None and not float(lr) > 0:
        raise CompressError(f"--lr must be positive, got {lr}")
    train = cfg.get("train", {})
    return Plan(
        model_dir,
        out,
        cfg,
        sparsity,
        prune_steps,
        qat_steps,
        bool(qat),
        distill_loss if distill else None,
        int(ways or train.get("ways", 20)),
        int(shots or train.get("shots", 1)),
        int(train.get("queries", 15) if queries is None else queries),
        None if lr is None else float(lr),
        int(seed),
        int(episodes),
        tuple(eval_ways),
        *thin,
        distill_shifts=int(distill_shifts),
        distill_steps=int(distill_steps),
    )


def _check_structured(fraction, score, scope, steps, multiple) -> tuple:
    """(fraction(s), score, scope, steps, multiple) of the structured stage, checked."""
    from .structured import SCOPES, SCORES

    fraction = parse_fractions(fraction)
    steps = DEFAULTS["structured_steps"] if steps is None else int(steps)
    if score not in SCORES or scope not in SCOPES:
        raise CompressError(
            f"--structured-score must be one of {', '.join(SCORES)} and --structured-scope one of "
            f"{', '.join(SCOPES)} (got {score!r}, {scope!r})"
        )
    if steps < 0 or int(multiple) < 1:
        raise CompressError(
            f"--structured-steps must be >= 0 and --structured-multiple >= 1 (got {steps}, {multiple})"
        )
    if isinstance(fraction, list) and scope != "layer":
        raise CompressError("per-layer --structured fractions need --structured-scope layer")
    return fraction, score, scope, steps, int(multiple)


class _Stages:
    """Accuracy of each stage on the held-out test classes, the same episodes every time."""

    def __init__(self, p: Plan, log, progress):
        from .datasets import load_data
        from .evaluate import episode_settings

        self.data = load_data(
            p.cfg["data"],
            int(p.cfg["input"]["shape"][0]),
            HELDOUT_SPLIT,
            seed=int(p.cfg.get("train", {}).get("split_seed", 0)),
            progress=progress,
            channels=int(p.cfg["input"]["shape"][-1]),
        )
        self.settings = episode_settings(self.data, p.eval_ways, DEFAULTS["eval_shots"])
        self.episodes, self.log, self.results = p.episodes, log, {}

    def measure(self, name: str, key: str, spec, backbone=None, embed_fn=None) -> dict:
        from .evaluate import accuracy_by_setting, embed_all, keras_embed_fn

        emb = embed_all(embed_fn or keras_embed_fn(backbone), self.data)
        res = self.results[key] = accuracy_by_setting(
            emb, self.data, spec, self.settings, self.episodes, EVAL_SEED
        )
        self.log(
            f"{name:<12} "
            + "  ".join(
                f"{k} {100 * v['mean']:.2f}% ± {100 * v['ci95']:.2f}" for k, v in res.items()
            )
        )
        return res


def _sampler(p: Plan, progress):
    """Training data and episodes as training saw them (hard-episode mix, augmentation): without the
    augmentation a model trained with it overfits the few training characters within a few hundred steps."""
    from .augment import Augment
    from .datasets import load_data
    from .episodes import EpisodeSampler

    train = p.cfg.get("train", {})
    data = load_data(
        p.cfg["data"],
        int(p.cfg["input"]["shape"][0]),
        "train",
        bool(train.get("rotations")),
        seed=int(train.get("split_seed", 0)),
        progress=progress,
        channels=int(p.cfg["input"]["shape"][-1]),
    )
    return data, EpisodeSampler(
        data,
        p.ways,
        p.shots,
        p.queries,
        seed=p.seed,
        within_group=float(train.get("within_alphabet") or 0),
        augment=Augment(**train.get("augment", {})),
    )


def _models(p: Plan):
    """(teacher backbone, teacher head, student backbone, student head, teacher HeadSpec): the float model
    twice, the teacher frozen; heads as Keras layers for the learner."""
    from .models import build_head

    _, teacher, teacher_spec = load_model_dir(p.model_dir)
    _, student, spec = load_model_dir(p.model_dir)

    def keras_head(hspec):
        head = build_head(p.cfg["head"], int(student.output_shape[-1]))
        head.set_weights([a for wb in hspec.weights for a in wb])
        return head

    teacher_head, student_head = keras_head(teacher_spec), keras_head(spec)
    for layer in teacher.layers + teacher_head.layers:
        layer.trainable = False
    return teacher, teacher_head, student, student_head, teacher_spec


def _hparams(p: Plan) -> dict:
    return hparams_of(p.cfg["algorithm"], p.cfg.get("train", {}).get("hparams"))


def _finetune(
    p: Plan, backbone, head, sampler, steps, lr, label, aux, progress, hooks=None
) -> dict:
    """``steps`` episodic meta-updates of ``backbone`` + ``head`` with the model's own algorithm."""
    from .algorithms import make_learner

    learner = make_learner(p.cfg["algorithm"], backbone, head, _hparams(p), aux_loss=aux)
    fit = run_episodes(learner, sampler, steps, lr, hooks=hooks, progress=progress, label=label)
    return {"loss": fit["loss"], "acc": fit["acc"]}


def _thin(
    p: Plan, student, student_head, head_spec, train_data, sampler, lr, aux, stages, progress
) -> tuple:
    """Structured pruning: (thinner backbone, fine-tuned episodically, its summary with the new widths).

    The head keeps its weights: the embedding layer keeps its width."""
    thin, bcfg, summary = thin_backbone(
        student,
        p.cfg["backbone"],
        p.cfg["input"]["shape"],
        p.structured,
        p.structured_score,
        p.structured_scope,
        calibration=train_data.inputs(),
        multiple=p.structured_multiple,
    )
    stages.measure("thinned", "thinned", head_spec(), thin)
    summary["finetune"] = _finetune(
        p,
        thin,
        student_head,
        sampler,
        p.structured_steps,
        lr,
        f"thin to widths {bcfg['widths']}",
        aux,
        progress,
    )
    summary["steps"] = p.structured_steps
    stages.measure("structured", "structured", head_spec(), thin)
    return thin, summary


def _int8_check(final, teacher, train_data, final_spec, teacher_spec, stages: _Stages) -> dict:
    """Convert the compressed and the float model to int8 TFLite; their size, stored sparsity and accuracy."""
    from metalite.export.inspect import weight_stats
    from metalite.export.tflite import convert_int8, run_int8

    reps = representative_inputs(train_data, 200)
    data, fdata = convert_int8(final, reps), convert_int8(teacher, reps)
    w = weight_stats(data)
    stages.measure(
        "int8 tflite", "int8_tflite", final_spec, embed_fn=lambda x: run_int8(data, x, batch=256)
    )
    stages.measure(
        "float->int8", "float_int8", teacher_spec, embed_fn=lambda x: run_int8(fdata, x, batch=256)
    )
    return {
        "bytes": len(data),
        "gzip_bytes": len(gzip.compress(data, 9)),
        "weights": w["weights"],
        "zeros": sum(t["zeros"] for t in w["tensors"]),
        "sparsity": w["sparsity"],
        "tensors": w["tensors"],
        "float_bytes": len(fdata),
        "float_gzip_bytes": len(gzip.compress(fdata, 9)),
    }


def _totals(layers: list) -> dict:
    pw = [r for r in layers if r["pruned"]]
    t = {
        "pruned_weights": sum(r["weights"] for r in pw),
        "pruned_zeros": sum(r["zeros"] for r in pw),
        "weights": sum(r["weights"] for r in layers),
        "zeros": sum(r["zeros"] for r in layers),
    }
    t["pruned_sparsity"] = t["pruned_zeros"] / max(t["pruned_weights"], 1)
    t["sparsity"] = t["zeros"] / max(t["weights"], 1)
    return t


def _report(
    p: Plan, layers, tflite, stages: _Stages, fits: dict, lr: float, seconds: float, thinned=None
) -> dict:
    return {
        "model": str(p.model_dir),
        "stage": p.stage,
        "sparsity": p.sparsity,
        "structured": thinned,
        "layers": layers,
        "totals": _totals(layers),
        "tflite": tflite,
        "stages": stages.results,
        "eval": {
            "data": portable_spec(p.cfg["data"]),
            "split": HELDOUT_SPLIT,
            "classes": stages.data.num_classes,
            "episodes": p.episodes,
            "settings": [list(s) for s in stages.settings],
            "seed": EVAL_SEED,
        },
        "finetune": {
            "algorithm": p.cfg["algorithm"],
            "ways": p.ways,
            "shots": p.shots,
            "queries": p.queries,
            "lr": lr,
            **fits,
            "seed": p.seed,
        },
        "steps": {
            **({"distill": p.distill_steps} if p.distill_steps else {}),
            "structured": p.structured_steps if p.thinning else 0,
            "prune": p.prune_steps if p.sparsity else 0,
            "qat": p.qat_steps if p.qat else 0,
        },
        "seconds": round(seconds, 1),
    }


def _config(p: Plan, report: dict) -> dict:
    """config.json of the compressed model: the float model's, plus stage, compression and the final accuracy."""
    cfg = {k: v for k, v in p.cfg.items() if k not in ("format", "format_version")}
    stages = report["stages"]
    cfg["stage"] = p.stage
    if report.get("structured"):
        cfg["backbone"] = {**cfg["backbone"], "widths": report["structured"]["widths"]}
    cfg["compression"] = {
        "sparsity": p.sparsity,
        "pqat": p.qat,
        "distill": p.distill,
        **({"distill_shifts": p.distill_shifts} if p.distill_shifts else {}),
        "structured": report.get("structured"),
        "steps": report["steps"],
        "finetune": {k: report["finetune"][k] for k in ("ways", "shots", "queries", "lr", "seed")},
        "kernel_sparsity": report["totals"]["pruned_sparsity"],
        "stages": stages,
        "source": p.model_dir.name,
    }
    final = next(
        k for k in ("int8_tflite", "pqat", "pruned", "structured", "distilled") if k in stages
    )
    metrics = dict(cfg.get("metrics") or {})
    for k, v in stages[final].items():
        metrics[k] = {
            **v,
            "data": describe_split(p.cfg["data"], HELDOUT_SPLIT),
            "measured": f"compress, {final.replace('_', ' ')}",
        }
    cfg["metrics"] = metrics
    return cfg


def compress(
    model_dir,
    out,
    sparsity=0.5,
    prune_steps=None,
    qat_steps=None,
    qat=True,
    distill=False,
    distill_loss="mse",
    ways=None,
    shots=None,
    queries=None,
    lr=None,
    seed=0,
    episodes=200,
    eval_ways=(5, 20),
    int8_check=True,
    progress=None,
    log=None,
    structured=0.0,
    structured_score="l1",
    structured_scope="layer",
    structured_steps=None,
    structured_multiple=16,
    overwrite=True,
    freeze_bn=False,
    distill_shifts=0,
    distill_steps=0,
) -> dict:
    """Thin (``structured``), prune (``sparsity``) and PQAT the float model in ``model_dir``; write the
    compressed model directory ``out`` (an existing one is replaced only if ``overwrite``: the CLI's ``--force``).

    ``freeze_bn``: pruning and PQAT keep the BatchNorm statistics and scales as they are after thinning
    (``models.freeze_batchnorm``), for episodes of a few classes that should not replace them.

    ``distill_steps``: first that many episodes of distilled fine-tuning of the float student, toward the
    teacher's embedding averaged over ``distill_shifts`` one-pixel shifts (a bundle exported with tta 0 then
    gets near the teacher's tta accuracy in one backbone run per image).

    ``progress``: a ``metalite.common.progress.Progress`` (None: silent); ``log`` overrides its news lines.
    Returns the report (also saved as ``out/compression_report.json``)."""
    t0 = time.time()
    p = plan(
        model_dir,
        out,
        sparsity,
        prune_steps,
        qat_steps,
        qat,
        distill,
        distill_loss,
        ways,
        shots,
        queries,
        lr,
        seed,
        episodes,
        eval_ways,
        structured,
        structured_score,
        structured_scope,
        structured_steps,
        structured_multiple,
        overwrite,
        distill_shifts,
        distill_steps,
    )
    progress = as_progress(progress)
    log = log or progress.log
    from metalite.export.tfcompat import tf

    tf.keras.utils.set_random_seed(p.seed)
    lr = p.lr or float(_hparams(p)["lr"])
    train_data, sampler = _sampler(p, progress)
    stages = _Stages(p, log, progress)
    teacher, teacher_head, student, student_head, teacher_spec = _models(p)
    head_spec = lambda: head_spec_from_keras(  # noqa: E731
        student_head,
        p.cfg["head"].get("activation", "linear"),
        dict(p.cfg["adaptation"]),
    )
    stages.measure("float", "float", teacher_spec, teacher)
    aux = (
        None
        if not p.distill
        else make_distill_loss(
            p.distill,
            teacher,
            teacher_head,
            student_head,
            p.ways * p.shots,
            p.ways,
            p.shots,
            float(_hparams(p)["scale"]),
            shifts=p.distill_shifts,
        )
    )

    fits = {"distill": None, "prune": None, "qat": None}
    if p.distill_steps:
        fits["distill"] = _finetune(
            p,
            student,
            student_head,
            sampler,
            p.distill_steps,
            lr,
            f"distil (teacher over {p.distill_shifts} shifts)",
            aux,
            progress,
        )
        stages.measure("distilled", "distilled", head_spec(), student)
    thinned = None
    if p.thinning:
        student, thinned = _thin(
            p, student, student_head, head_spec, train_data, sampler, lr, aux, stages, progress
        )
    frozen = freeze_batchnorm(student) if freeze_bn else []
    if p.sparsity > 0:
        wrapped = prune_wrap(student, p.sparsity, p.prune_steps)
        frozen += freeze_batchnorm(wrapped) if freeze_bn else []
        fits["prune"] = _finetune(
            p,
            wrapped,
            student_head,
            sampler,
            p.prune_steps,
            lr,
            f"prune to {100 * p.sparsity:.0f}%",
            aux,
            progress,
            PruningSchedule(wrapped),
        )
        stripped = finish_pruning(
            wrapped
        )  # ``student`` shares its layers: it now holds the pruned weights
        stages.measure("pruned", "pruned", head_spec(), stripped)
    layers, final, final_spec = weight_report(student), student, head_spec()
    tmp = Path(tempfile.mkdtemp(prefix=".compress."))
    try:
        thaw(frozen)
        student.save_weights(str(tmp / PRUNED_WEIGHTS))
        if p.qat:
            final = quantize_pqat(student)
            frozen = freeze_batchnorm(final) if freeze_bn else []
            fits["qat"] = _finetune(
                p, final, student_head, sampler, p.qat_steps, lr * QAT_LR, "PQAT", aux, progress
            )
            final_spec = head_spec()
            stages.measure("pqat (keras)", "pqat", final_spec, final)
        tflite = (
            _int8_check(final, teacher, train_data, final_spec, teacher_spec, stages)
            if int8_check
            else None
        )
        report = _report(p, layers, tflite, stages, fits, lr, time.time() - t0, thinned)
        atomic_write_text(tmp / REPORT, json.dumps(report, indent=2, default=float))
        thaw(frozen)
        save_model_dir(
            p.out,
            _config(p, report),
            final,
            final_spec,
            extra_files={PRUNED_WEIGHTS: tmp / PRUNED_WEIGHTS, REPORT: tmp / REPORT},
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def format_report(report: dict) -> str:
    """The report as text: weight table, then accuracy per stage."""
    lines = [f"{'weight tensor':<34} {'shape':<18} {'#weights':>9} {'sparsity':>9}"]
    for r in report["layers"]:
        lines.append(
            f"{r['name']:<34} {str(tuple(r['shape'])):<18} {r['weights']:>9} {100 * r['sparsity']:>8.1f}%"
            + ("  pruned" if r["pruned"] else "")
        )
    t = report["totals"]
    st = report.get("structured")
    if st:
        lines.append(
            f"filters removed: {st['filters_removed']}/{st['filters_prunable']} ({100 * st['fraction']:.0f}%, "
            f"score {st['score']}, scope {st['scope']}); conv widths {st['widths_before']} -> {st['widths']}"
        )
    lines.append(
        f"pruned kernels: {t['pruned_zeros']}/{t['pruned_weights']} zero "
        f"({100 * t['pruned_sparsity']:.1f}%); all weights {100 * t['sparsity']:.1f}%"
    )
    if report.get("tflite"):
        tl = report["tflite"]
        lines.append(
            f"int8 TFLite: {tl['bytes']} bytes ({tl['gzip_bytes']} gzipped), conv/fc weights "
            f"{100 * tl['sparsity']:.1f}% exact zeros (float model int8: {tl.get('float_bytes', '?')} bytes, "
            f"{tl.get('float_gzip_bytes', '?')} gzipped)"
        )
    lines.append("accuracy (held-out classes, same episodes for every stage, 95% CI):")
    keys = list(next(iter(report["stages"].values())).keys()) if report["stages"] else []
    lines.append(f"  {'stage':<14}" + "".join(f"{k:>18}" for k in keys))
    base = report["stages"].get("float", {})
    for stage, accs in report["stages"].items():
        cells = []
        for k in keys:
            a = accs.get(k)
            if a is None:
                cells.append(f"{'-':>18}")
                continue
            d = (
                f" ({100 * (a['mean'] - base[k]['mean']):+.1f})"
                if stage != "float" and k in base
                else ""
            )
            cells.append(f"{100 * a['mean']:>8.2f}±{100 * a['ci95']:.2f}{d:>7}")
        lines.append(f"  {stage:<14}" + "".join(cells))
    extra = extra_steps(report)
    if extra:
        lines.append(
            f"  (+x): change from the float model as trained; every later stage had {extra} more fine-tuning "
            "episodes than it,"
        )
        lines.append(
            "  so a gain is that extra training, not compression. float_int8 (the float model converted as "
            "it is) shows what int8 alone costs."
        )
    return "\n".join(lines)


def extra_steps(compression: dict) -> int:
    """Fine-tuning episodes a compressed model had beyond its float model's training (structured + prune + QAT),
    from a compression report or a model's ``compression`` section."""
    return sum(int(v or 0) for v in (compression.get("steps") or {}).values())
