"""Compression of a meta-trained model: magnitude pruning, then pruning-preserving QAT (PQAT), optionally
distilled from the float model, each stage fine-tuned with the model's own episodic meta-objective.

``compress(model_dir, out, ...)`` writes a model directory with ``"stage": "pqat"`` (or ``"pruned"``)
that ``metalite export`` converts to a sparse full-integer int8 TFLite backbone.

What a compressed model directory holds (besides config.json and head.npz):

- ``backbone_pruned.weights.h5``: the stripped pruned float backbone (exact zeros), plain tf_keras layers;
  ``load_pruned_float(path)`` rebuilds it.
- ``backbone.weights.h5``: for "pqat", the weights of the quantize_apply'd backbone (fake-quant ranges
  included); for "pruned", the same as backbone_pruned.weights.h5.
- ``compression_report.json``: per weight tensor shape/#weights/sparsity, accuracy after each stage.

``load_compressed(path, cfg)`` (called by ``modeldir.load_model_dir``) rebuilds deterministically: float
backbone from the config, pruned float weights loaded (PQAT derives its sparsity masks from the exact
zeros of the kernels when ``quantize_apply`` builds the model, so they must be there first), then
``quantize_annotate_model`` + ``quantize_apply`` with ``Default8BitPrunePreserveQuantizeScheme``, then
the PQAT weights.
"""
from __future__ import annotations

import gzip
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .modeldir import ModelDirError, load_head_checked, load_weights

PRUNABLE = ("Conv2D", "DepthwiseConv2D", "Dense")
DISTILL_LOSSES = ("kl", "mse", "cosine")
DEFAULTS = {"sparsity": 0.5, "prune_steps": 300, "qat_steps": 150, "qat": True, "distill": False,
            "distill_loss": "mse", "distill_weight": 1.0, "temperature": 4.0, "lr": None, "seed": 0,
            "episodes": 200, "eval_ways": (5, 20), "eval_shots": 1}
PRUNED_WEIGHTS = "backbone_pruned.weights.h5"
REPORT = "compression_report.json"


class CompressError(ValueError):
    """Bad compression settings or input model; one line naming the problem."""


def check_sparsity(sparsity) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise CompressError(f"--sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= s < 1.0) or math.isnan(s):
        raise CompressError(f"--sparsity must be in [0, 1) (fraction of weights set to zero), got {sparsity}")
    return s


def _tfmot():
    from .tfcompat import tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF-MOT imports keras)
    import tensorflow_model_optimization as tfmot

    return tfmot


def is_prunable(layer) -> bool:
    """Only convolution/dense kernels are pruned (BatchNorm, pooling etc. stay dense)."""
    return type(layer).__name__ in PRUNABLE


def _kernel_names(layer) -> list:
    return ["depthwise_kernel"] if type(layer).__name__ == "DepthwiseConv2D" else ["kernel"]


# ---- pruning ----------------------------------------------------------------------------------------------

def pruning_schedule(sparsity: float, steps: int):
    """PolynomialDecay from 0 to ``sparsity`` over the first ~2/3 of ``steps`` (the rest fine-tunes with the
    final mask). ``end_step`` is a multiple of ``frequency`` so the last mask update hits the target."""
    tfmot = _tfmot()
    steps = max(int(steps), 1)
    end = max(1, (2 * steps) // 3)
    freq = max(1, end // 10)
    end = max(freq, (end // freq) * freq)
    return tfmot.sparsity.keras.PolynomialDecay(0.0, float(sparsity), begin_step=0, end_step=end,
                                                 power=3, frequency=freq)


def prune_wrap(backbone, sparsity: float, steps: int):
    """The backbone with its Conv2D/DepthwiseConv2D/Dense layers wrapped by ``prune_low_magnitude``.

    The wrapped model *shares* layers (and weights) with ``backbone``; after ``finish_pruning`` the
    original ``backbone`` object holds the pruned weights."""
    from .tfcompat import keras

    tfmot = _tfmot()
    schedule = pruning_schedule(sparsity, steps)

    def clone(layer):
        if is_prunable(layer):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    model = keras.models.clone_model(backbone, clone_function=clone)
    set_pruning_step(model, 0)
    return model


def _prune_wrappers(model):
    _tfmot()
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

    return [l for l in model.layers if isinstance(l, PruneLowMagnitude)]


def set_pruning_step(model, step: int) -> None:
    """Drive the pruning step ourselves (what ``UpdatePruningStep`` does in ``fit``): the wrappers
    increment it on every training call and update masks when the schedule says so; setting it per outer
    step keeps the schedule in outer steps even when a learner calls the backbone several times."""
    for w in _prune_wrappers(model):
        w.pruning_step.assign(int(step))


def finish_pruning(model):
    """Apply the masks to the weights (so they hold exact zeros) and strip the wrappers."""
    tfmot = _tfmot()
    for w in _prune_wrappers(model):
        w.pruning_obj.weight_mask_op()
    return tfmot.sparsity.keras.strip_pruning(model)


# ---- PQAT ---------------------------------------------------------------------------------------------------

def quantize_pqat(float_backbone):
    """quantize_annotate_model + quantize_apply with the pruning-preserving 8-bit scheme. The sparsity
    masks are computed here from the exact zeros of ``float_backbone``'s kernels."""
    tfmot = _tfmot()
    annotated = tfmot.quantization.keras.quantize_annotate_model(float_backbone)
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    with tfmot.quantization.keras.quantize_scope():
        return tfmot.quantization.keras.quantize_apply(annotated, scheme)


def qat_effective_kernels(model) -> dict:
    """{layer name: kernel as the quantized forward pass sees it (kernel * sparsity mask)} of a PQAT model."""
    out = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        if inner is None or not is_prunable(inner):
            continue
        wv = getattr(layer, "_weight_vars", None) or []
        for weight, _quantizer, qvars in wv:
            k = weight.numpy()
            mask = qvars.get("sparsity_mask") if isinstance(qvars, dict) else None
            out[inner.name] = k * (mask.numpy() if mask is not None else 1.0)
    return out


# ---- reports ------------------------------------------------------------------------------------------------

def weight_report(float_backbone) -> list:
    """Per weight tensor of a plain (stripped) backbone: name, shape, #weights, exact-zero sparsity, pruned?"""
    rows = []
    for layer in float_backbone.layers:
        prunable = set(_kernel_names(layer)) if is_prunable(layer) else set()
        for w in layer.weights:
            a = w.numpy()
            short = w.name.split("/")[-1].split(":")[0]
            rows.append({"name": f"{layer.name}/{short}", "shape": list(a.shape), "weights": int(a.size),
                         "zeros": int(np.sum(a == 0)), "sparsity": float(np.mean(a == 0)) if a.size else 0.0,
                         "pruned": short in prunable, "trainable": bool(w.trainable)})
    return rows


def tflite_weight_report(data: bytes) -> list:
    """Constant weight tensors of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED ops in a .tflite file."""
    from metalite.export.flatbuf import read_model

    m = read_model(data)
    rows = []
    for op in m.ops:
        if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(op.inputs) < 2:
            continue
        t = m.tensors[op.inputs[1]]
        if t.data is None:
            continue
        rows.append({"op": op.name, "tensor": t.name, "dtype": t.dtype, "shape": t.shape,
                     "weights": int(t.data.size), "zeros": int(np.sum(t.data == 0)),
                     "sparsity": float(np.mean(t.data == 0))})
    return rows


def format_report(report: dict) -> str:
    """The report as text: weight table, then accuracy per stage."""
    lines = [f"{'weight tensor':<34} {'shape':<18} {'#weights':>9} {'sparsity':>9}"]
    for r in report["layers"]:
        lines.append(f"{r['name']:<34} {str(tuple(r['shape'])):<18} {r['weights']:>9} {100 * r['sparsity']:>8.1f}%"
                     + ("  pruned" if r["pruned"] else ""))
    t = report["totals"]
    lines.append(f"pruned kernels: {t['pruned_zeros']}/{t['pruned_weights']} zero "
                 f"({100 * t['pruned_sparsity']:.1f}%); all weights {100 * t['sparsity']:.1f}%")
    if report.get("tflite"):
        tl = report["tflite"]
        lines.append(f"int8 TFLite: {tl['bytes']} bytes ({tl['gzip_bytes']} gzipped), conv/fc weights "
                     f"{100 * tl['sparsity']:.1f}% exact zeros (float model int8: {tl.get('float_bytes', '?')} bytes, "
                     f"{tl.get('float_gzip_bytes', '?')} gzipped)")
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
            d = f" ({100 * (a['mean'] - base[k]['mean']):+.1f})" if stage != "float" and k in base else ""
            cells.append(f"{100 * a['mean']:>8.2f}±{100 * a['ci95']:.2f}{d:>7}")
        lines.append(f"  {stage:<14}" + "".join(cells))
    return "\n".join(lines)


# ---- evaluation ---------------------------------------------------------------------------------------------

def eval_split(cfg: dict) -> str:
    """Held-out classes of the model's data: "test" for glyphs (it has a test split), else "val"."""
    return "test" if str(cfg.get("data", "glyphs")).split(":")[0] == "glyphs" else "val"


def eval_settings(data, ways_list=(5, 20), shots: int = 1) -> list:
    """[(ways, shots, queries)] that the held-out data can supply (ways clamped, duplicates dropped)."""
    counts = data.counts()
    out = []
    for ways in ways_list:
        usable = counts >= shots + 1
        w = min(int(ways), int(usable.sum()))
        if w < 2:
            continue
        q = int(min(15, np.sort(counts[usable])[::-1][w - 1] - shots))
        if (w, shots, q) not in out:
            out.append((w, shots, q))
    if not out:
        raise CompressError(f"{data.spec}: held-out classes cannot supply even 2-way {shots}-shot episodes")
    return out


def accuracy(emb, data, spec, settings, episodes: int, seed: int = 1234) -> dict:
    """{"5way1shot": evaluate_embeddings(...), ...}; the same seed gives the same episodes for every stage."""
    from .evaluate import evaluate_embeddings

    return {f"{w}way{s}shot": evaluate_embeddings(emb, data, spec, w, s, q, episodes, seed=seed)
            for w, s, q in settings}


# ---- distillation -------------------------------------------------------------------------------------------

def make_distill_loss(kind: str, teacher, teacher_head, student_head, n_support: int, ways: int, shots: int,
                      scale: float, temperature: float, weight: float):
    """``aux_loss(embeddings, images)`` for the learner: the float model teaches the compressed one.

    - ``kl``: KL(teacher || student) of the episode's prototype logits (queries against the support
      prototypes, through each model's head) at temperature T, times T^2 (Hinton et al. 2015).
    - ``mse``: squared embedding error relative to the teacher's mean squared embedding.
    - ``cosine``: 1 - cosine similarity between student and teacher embeddings.
    """
    from .algorithms import prototype_classifier
    from .tfcompat import tf

    if kind not in DISTILL_LOSSES:
        raise CompressError(f"unknown distillation loss {kind!r}; choose one of {', '.join(DISTILL_LOSSES)}")
    ys = tf.constant(np.repeat(np.arange(ways), shots), tf.int32)

    def logits(h):
        w, b = prototype_classifier(h[:n_support], ys, ways, scale)
        return tf.matmul(h[n_support:], w) + b

    def aux(e, x):
        t = tf.stop_gradient(teacher(x, training=False))
        if kind == "mse":
            loss = tf.reduce_mean(tf.square(e - t)) / (tf.reduce_mean(tf.square(t)) + 1e-8)
        elif kind == "cosine":
            loss = 1.0 - tf.reduce_mean(tf.reduce_sum(tf.math.l2_normalize(e, 1) * tf.math.l2_normalize(t, 1), 1))
        else:
            lt = tf.stop_gradient(logits(teacher_head(t, training=False))) / temperature
            ls = logits(student_head(e, training=True)) / temperature
            kl = tf.reduce_sum(tf.nn.softmax(lt) * (tf.nn.log_softmax(lt) - tf.nn.log_softmax(ls)), 1)
            loss = tf.reduce_mean(kl) * temperature ** 2
        return weight * loss

    return aux


# ---- fine-tuning --------------------------------------------------------------------------------------------

def finetune(learner, sampler, steps: int, lr: float, label: str, before_step=None, progress: bool = True):
    """``steps`` episodic meta-updates with a cosine-decayed learning rate; returns mean loss/acc of the last 10%."""
    hist = []
    stats = {"loss": float("nan"), "acc": float("nan")}
    bar = click_bar(steps, label, progress, lambda _: f"loss {stats['loss']:.3f} acc {stats['acc']:.3f}")
    with bar:
        for step in range(steps):
            learner.optimizer.learning_rate.assign(lr * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))
            if before_step is not None:
                before_step(step)
            m = learner.train_step(sampler.sample())
            hist.append(m)
            a = 1.0 if step == 0 else 0.1
            stats = {k: (1 - a) * stats[k] + a * m[k] if step else m[k] for k in ("loss", "acc")}
            bar.update(1)
    tail = hist[-max(1, len(hist) // 10):] if hist else [{"loss": float("nan"), "acc": float("nan")}]
    return {"loss": float(np.mean([h["loss"] for h in tail])), "acc": float(np.mean([h["acc"] for h in tail]))}


def click_bar(length, label, progress, item_show_func=None):
    import click

    class _Null:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def update(self, n):
            pass

    if not progress or length <= 0:
        return _Null()
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True, show_eta=True,
                             item_show_func=item_show_func)


# ---- the whole job ------------------------------------------------------------------------------------------

def _check_out(out: Path, model_dir: Path) -> None:
    if out.resolve() == model_dir.resolve():
        raise CompressError(f"{out}: --out must differ from the input model directory")
    if out.exists() and not out.is_dir():
        raise CompressError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not (out / "config.json").exists():
        raise CompressError(f"{out}: exists, is not empty and is not a metalite model directory; not replacing it")
    parent = out.parent if out.parent != Path("") else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise CompressError(f"{out}: cannot write there ({e.strerror or e})") from None


def _representative(data, n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(data.images))[:n]
    return data.inputs()[np.sort(idx)]


def compress(model_dir, out, sparsity=0.5, prune_steps=None, qat_steps=None, qat=True, distill=False,
             distill_loss="mse", ways=None, shots=None, queries=None, lr=None, seed=0, episodes=200,
             eval_ways=(5, 20), int8_check=True, progress=True, log=None) -> dict:
    """Prune (+ PQAT) the float model in ``model_dir`` and write the compressed model directory ``out``.

    Returns the report (also saved as ``out/compression_report.json``)."""
    import click

    log = log or (lambda msg: click.echo(msg, err=True))
    t0 = time.time()
    sparsity = check_sparsity(sparsity)
    model_dir, out = Path(model_dir), Path(out)
    from .modeldir import head_spec_from_keras, load_model_dir, read_config, save_model_dir

    cfg = read_config(model_dir)
    if cfg.get("stage", "float") != "float":
        raise CompressError(f"{model_dir}: already compressed (stage {cfg.get('stage')!r}); compress the float model")
    _check_out(out, model_dir)
    prune_steps = DEFAULTS["prune_steps"] if prune_steps is None else int(prune_steps)
    qat_steps = DEFAULTS["qat_steps"] if qat_steps is None else int(qat_steps)
    if prune_steps < 1 or qat_steps < 0:
        raise CompressError(f"--prune-steps must be >= 1 and --qat-steps >= 0 (got {prune_steps}, {qat_steps})")
    if distill and distill_loss not in DISTILL_LOSSES:
        raise CompressError(f"unknown distillation loss {distill_loss!r}; choose one of {', '.join(DISTILL_LOSSES)}")
    train_cfg = cfg.get("train", {})
    ways = int(ways or train_cfg.get("ways", 20))
    shots = int(shots or train_cfg.get("shots", 1))
    queries = int(train_cfg.get("queries", 15) if queries is None else queries)

    from .algorithms import DEFAULT_HPARAMS, make_learner
    from .datasets import load_data
    from .augment import Augment
    from .episodes import EpisodeSampler
    from .evaluate import embed_all, keras_embed_fn
    from .models import build_head
    from .tfcompat import tf

    tf.keras.utils.set_random_seed(int(seed))
    algorithm = cfg["algorithm"]
    hparams = {**DEFAULT_HPARAMS[algorithm], **train_cfg.get("hparams", {})}
    lr = float(hparams["lr"] if lr is None else lr)
    if not lr > 0:
        raise CompressError(f"--lr must be positive, got {lr}")
    size = int(cfg["input"]["shape"][0])
    train_data = load_data(cfg["data"], size, "train", bool(train_cfg.get("rotations")), progress=progress)
    split = eval_split(cfg)
    eval_data = load_data(cfg["data"], size, split, progress=False)
    settings = eval_settings(eval_data, eval_ways, DEFAULTS["eval_shots"])
    # Fine-tuning sees the episodes training saw (hard-episode mix, augmentation): without the
    # augmentation a model trained with it overfits the few training characters within a few hundred steps.
    sampler = EpisodeSampler(train_data, ways, shots, queries, seed=int(seed),
                             within_group=float(train_cfg.get("within_alphabet") or 0),
                             augment=Augment(**train_cfg.get("augment", {})))

    _, teacher, teacher_spec = load_model_dir(model_dir)
    _, student, spec = load_model_dir(model_dir)
    activation = cfg["head"].get("activation", "linear")
    adaptation = dict(cfg["adaptation"])

    def keras_head(hspec):
        head = build_head(cfg["head"], int(student.output_shape[-1]))
        head.set_weights([a for wb in hspec.weights for a in wb])
        return head

    teacher_head, student_head = keras_head(teacher_spec), keras_head(spec)
    for layer in teacher.layers + teacher_head.layers:
        layer.trainable = False

    def eval_stage(name, backbone, hspec, embed_fn=None):
        emb = embed_all(embed_fn or keras_embed_fn(backbone), eval_data)
        res = accuracy(emb, eval_data, hspec, settings, episodes)
        log(f"{name:<12} " + "  ".join(f"{k} {100 * v['mean']:.2f}% ± {100 * v['ci95']:.2f}" for k, v in res.items()))
        return res

    stages = {"float": eval_stage("float", teacher, teacher_spec)}
    aux = None
    if distill:
        aux = make_distill_loss(distill_loss, teacher, teacher_head, student_head, ways * shots, ways, shots,
                                float(hparams.get("scale", 1.0)), DEFAULTS["temperature"], DEFAULTS["distill_weight"])

    # 1. magnitude pruning, fine-tuned with the same meta-objective
    pruned_model = prune_wrap(student, sparsity, prune_steps)
    learner = make_learner(algorithm, pruned_model, student_head, hparams, aux_loss=aux)
    fit_prune = finetune(learner, sampler, prune_steps, lr, f"prune to {100 * sparsity:.0f}%",
                         before_step=lambda step: set_pruning_step(pruned_model, step), progress=progress)
    stripped = finish_pruning(pruned_model)
    # ``student`` shares its layers with the wrapped model: it now holds the pruned weights.
    layers = weight_report(student)
    spec_pruned = head_spec_from_keras(student_head, activation, adaptation)
    stages["pruned"] = eval_stage("pruned", stripped, spec_pruned)

    tmp = Path(tempfile.mkdtemp(prefix=".compress."))
    try:
        student.save_weights(str(tmp / PRUNED_WEIGHTS))
        final, final_spec, fit_qat = student, spec_pruned, None
        if qat:
            qmodel = quantize_pqat(student)
            qlearner = make_learner(algorithm, qmodel, student_head, hparams, aux_loss=aux)
            fit_qat = finetune(qlearner, sampler, qat_steps, lr * 0.3, "PQAT", progress=progress)
            final, final_spec = qmodel, head_spec_from_keras(student_head, activation, adaptation)
            stages["pqat"] = eval_stage("pqat (keras)", qmodel, final_spec)

        tflite = None
        if int8_check:
            from metalite.export.tflite import convert_int8, run_int8

            reps = _representative(train_data)
            data = convert_int8(final, reps)
            fdata = convert_int8(teacher, reps)
            rows = tflite_weight_report(data)
            n, z = sum(r["weights"] for r in rows), sum(r["zeros"] for r in rows)
            tflite = {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9)), "weights": n, "zeros": z,
                      "sparsity": z / max(n, 1), "tensors": rows, "float_bytes": len(fdata),
                      "float_gzip_bytes": len(gzip.compress(fdata, 9))}
            stages["int8_tflite"] = eval_stage("int8 tflite", None, final_spec,
                                               embed_fn=lambda x: run_int8(data, x, batch=256))
            stages["float_int8"] = eval_stage("float->int8", None, teacher_spec,
                                              embed_fn=lambda x: run_int8(fdata, x, batch=256))

        pw = [r for r in layers if r["pruned"]]
        totals = {"pruned_weights": sum(r["weights"] for r in pw), "pruned_zeros": sum(r["zeros"] for r in pw),
                  "weights": sum(r["weights"] for r in layers), "zeros": sum(r["zeros"] for r in layers)}
        totals["pruned_sparsity"] = totals["pruned_zeros"] / max(totals["pruned_weights"], 1)
        totals["sparsity"] = totals["zeros"] / max(totals["weights"], 1)
        stage = "pqat" if qat else "pruned"
        report = {"model": str(model_dir), "stage": stage, "sparsity": sparsity, "layers": layers, "totals": totals,
                  "tflite": tflite, "stages": stages,
                  "eval": {"data": cfg["data"], "split": split, "classes": eval_data.num_classes,
                           "episodes": episodes, "settings": [list(s) for s in settings], "seed": 1234},
                  "finetune": {"algorithm": algorithm, "ways": ways, "shots": shots, "queries": queries, "lr": lr,
                               "prune": fit_prune, "qat": fit_qat, "seed": int(seed)},
                  "seconds": round(time.time() - t0, 1)}
        (tmp / REPORT).write_text(json.dumps(report, indent=2, default=float))
        new_cfg = {k: v for k, v in cfg.items() if k not in ("format", "format_version")}
        new_cfg.update({
            "stage": stage,
            "compression": {"sparsity": sparsity, "pqat": bool(qat),
                            "distill": (distill_loss if distill else None),
                            "steps": {"prune": prune_steps, "qat": qat_steps if qat else 0},
                            "finetune": {"ways": ways, "shots": shots, "queries": queries, "lr": lr, "seed": int(seed)},
                            "kernel_sparsity": totals["pruned_sparsity"],
                            "stages": stages, "source": str(model_dir)},
        })
        metrics = dict(cfg.get("metrics") or {})
        final_key = "int8_tflite" if "int8_tflite" in stages else stage
        for k, v in stages[final_key].items():
            metrics[k] = {**v, "data": f"{cfg['data']} ({split} classes)",
                          "measured": f"compress, {final_key.replace('_', ' ')}"}
        new_cfg["metrics"] = metrics
        save_model_dir(out, new_cfg, final, final_spec,
                       extra_files={PRUNED_WEIGHTS: tmp / PRUNED_WEIGHTS, REPORT: tmp / REPORT})
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return report


# ---- loading ------------------------------------------------------------------------------------------------

def load_pruned_float(path):
    """(config, pruned float backbone with exact zeros, HeadSpec) of a compressed model directory."""
    from .modeldir import build_from_config, read_config

    path = Path(path)
    cfg = read_config(path)
    if cfg.get("stage", "float") == "float":
        raise ModelDirError(f"{path}: not a compressed model (stage 'float')")
    backbone, _ = build_from_config(cfg)
    load_weights(backbone, path / PRUNED_WEIGHTS)
    return cfg, backbone, load_head_checked(path)


def load_compressed(path, cfg=None):
    """(config, backbone, HeadSpec) of a "pruned" or "pqat" model directory; for "pqat" the backbone is the
    quantize_apply'd keras model that ``metalite.export`` converts to int8."""
    from .modeldir import build_from_config, read_config

    path = Path(path)
    cfg = cfg or read_config(path)
    stage = cfg.get("stage")
    if stage not in ("pruned", "pqat"):
        raise ModelDirError(f"{path / 'config.json'}: unknown stage {stage!r} (expected float, pruned or pqat)")
    backbone, _ = build_from_config(cfg)
    load_weights(backbone, path / PRUNED_WEIGHTS)
    if stage == "pqat":
        backbone = quantize_pqat(backbone)
        load_weights(backbone, path / "backbone.weights.h5")
    return cfg, backbone, load_head_checked(path)
