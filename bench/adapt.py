"""The ``adaptation`` section of ``metalite bench``: how long learning a new task takes, and how well it works.

Tasks are N-way 5-shot episodes from the held-out classes. For each method the wall time is split into
embedding the support images and fitting the head, and the accuracy on the episode's queries is reported
next to it:

- ``metalite``: the runtime (``FewShotClassifier`` on the bundle's int8 backbone, ``runtime.head.adapt``).
- ``tflite_odt``: a TFLite model with on-device-training signatures (``odt``) that trains the same classifier
  on top of the same (frozen) hidden layers.
- ``keras_finetune``: the same classifier in TF Keras (``model.fit``), prototype init, float Keras embeddings.
- ``pycoral_sgd``: softmax regression on the raw embeddings from random init, SGD as pycoral's on-device
  backprop recipe (batch 100 sampled with replacement, 500 iterations, lr 0.01, weights ~ N(0, 0.01^2)).
"""

from __future__ import annotations

import textwrap
import time

import numpy as np

from metalite.runtime import head as headlib

from .fields import f, get, ratio
from .odt import ODTRunner, build_odt_model
from .plots import save

METHODS = {
    "metalite": "metalite runtime",
    "tflite_odt": "TFLite on-device training",
    "keras_finetune": "Keras fine-tuning",
    "pycoral_sgd": "pycoral-style SGD",
}
PYCORAL = {"batch_size": 100, "iterations": 500, "lr": 0.01, "weight_scale": 0.01, "reg": 0.0}
DEFAULT_FINETUNE = {"steps": 50}


# ----------------------------------------------------------------------------- pycoral-style softmax regression
def pycoral_softmax_regression(x, y, n_classes, seed=0, **over):
    """Softmax regression W (d, C), b (C,) trained by SGD like pycoral's ``SoftmaxRegression.train_with_sgd``."""
    p = {**PYCORAL, **over}
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float32)
    w = (rng.standard_normal((x.shape[1], n_classes)) * p["weight_scale"]).astype(np.float32)
    b = np.zeros(n_classes, np.float32)
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    for _ in range(p["iterations"]):
        idx = rng.choice(len(x), p["batch_size"])  # with replacement, as pycoral
        xb, yb = x[idx], onehot[idx]
        g = (headlib.softmax(xb @ w + b) - yb) / len(idx)
        w -= p["lr"] * (xb.T @ g + p["reg"] * w)
        b -= p["lr"] * g.sum(axis=0)
    return w, b


# ----------------------------------------------------------------------------- the section
def _median(v):
    return float(np.median(v)) if len(v) else None


def _summ(times: dict, accs: list) -> dict:
    from metalite.training.evaluate import mean_ci95

    out = {k + "_ms": _median(v) for k, v in times.items()}
    out["accuracy"], out["accuracy_ci95"] = mean_ci95(accs) if len(accs) else (None, 0.0)
    return out


def _methods(clf, spec, steps, ft_steps, ft_lr) -> dict:
    a = spec.adaptation
    copies = int(a.get("tta", 0) or 0)
    int8 = (
        f"int8 embeddings averaged over the image and {copies} shifted copies ({1 + copies} backbone runs per "
        "image, the bundle's tta)"
        if copies
        else "int8 embeddings"
    )
    return {
        "metalite": f"FewShotClassifier.fit: int8 backbone ({clf.backend}) + runtime.head.adapt "
        f"(prototype init + {steps} steps, lr {a.get('lr')}, adapt={a.get('adapt')}), {int8}",
        "tflite_odt": f"TFLite model with init/train/infer signatures (TFLITE_BUILTINS only), prototype init + "
        f"{ft_steps} full-batch steps of lr {ft_lr} on the classifier (hidden layers frozen), "
        f"metalite's {int8}",
        "keras_finetune": f"tf_keras model.fit of the classifier (hidden layers frozen), prototype init + {ft_steps} "
        f"full-batch SGD epochs of lr {ft_lr}, float Keras embeddings (one backbone run per image)",
        "pycoral_sgd": f"softmax regression on metalite's {int8} from random init N(0, 0.01^2), SGD batch 100 "
        "(with replacement), 500 iterations, lr 0.01 (pycoral's on-device backprop recipe)",
    }


def _odt(spec, dim, ways, backend) -> dict:
    """{"runner", "build_ms", "bytes"} of the ODT model for ``ways`` classes, or {"error": why}."""
    try:
        t = time.perf_counter()
        model = build_odt_model(spec, dim, ways)
        return {
            "runner": ODTRunner(model, backend),
            "build_ms": (time.perf_counter() - t) * 1000,
            "bytes": len(model),
        }
    except Exception as e:  # conversion problems are reported, not fatal
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}


class _Tally:
    """Wall times (seconds) and query accuracies of every method over the timed tasks."""

    def __init__(self, methods):
        self.T = {m: {"embed": [], "head": [], "total": [], "fit": []} for m in methods}
        self.A = {m: [] for m in methods}
        self.losses = []


def _metalite_task(clf, spec, s_img, ys, q_img, yq, ways, tally) -> np.ndarray:
    """The runtime end to end (fit + predict), then its two parts timed apart; returns support embeddings."""
    T, A = tally.T, tally.A
    clf.embed(
        s_img
    )  # untimed: the first call after the 300-query batch pays for refilled caches, whichever it is
    t = time.perf_counter()
    clf.fit(s_img, ys.tolist())
    T["metalite"]["fit"].append(time.perf_counter() - t)
    t = time.perf_counter()
    emb = clf.embed(s_img)
    T["metalite"]["embed"].append(time.perf_counter() - t)
    t = time.perf_counter()
    headlib.adapt(spec, emb, ys, ways)
    T["metalite"]["head"].append(time.perf_counter() - t)
    A["metalite"].append(
        float(np.mean(np.array(clf.predict(q_img)) == yq))
    )  # after the timed parts
    for m in ("tflite_odt", "pycoral_sgd"):
        T[m]["embed"].append(T["metalite"]["embed"][-1])  # same int8 embedder
    return emb


def _odt_task(runner, emb, q_emb, ys, yq, ways, steps, lr, tally) -> None:
    onehot = np.eye(ways, dtype=np.float32)[ys]
    t = time.perf_counter()
    l0 = runner.init(emb, onehot)
    ls = [runner.train(emb, onehot, lr) for _ in range(steps)]
    tally.T["tflite_odt"]["head"].append(time.perf_counter() - t)
    tally.losses.append((l0, ls[-1] if ls else l0))
    tally.A["tflite_odt"].append(float(np.mean(runner.infer(q_emb).argmax(1) == yq)))


def _pycoral_task(emb, q_emb, ys, yq, ways, seed, tally) -> None:
    t = time.perf_counter()
    w, b = pycoral_softmax_regression(emb, ys, ways, seed=seed)
    tally.T["pycoral_sgd"]["head"].append(time.perf_counter() - t)
    tally.A["pycoral_sgd"].append(float(np.mean((q_emb @ w + b).argmax(1) == yq)))


def _setting_results(tally, methods, odt, ft_steps) -> dict:
    T = tally.T
    for m in T:
        if T[m]["embed"] and T[m]["head"]:
            T[m]["total"] = [e + h for e, h in zip(T[m]["embed"], T[m]["head"])]
        if not T[m]["fit"]:
            del T[m]["fit"]
    res = {}
    for m in methods:
        if not tally.A[m]:
            res[m] = {
                "skipped": (
                    f"ODT model not available ({odt['error']})"
                    if m == "tflite_odt" and "error" in odt
                    else "no Keras model"
                )
            }
        else:
            res[m] = _summ({k: [v * 1000 for v in vals] for k, vals in T[m].items()}, tally.A[m])
    if "runner" in odt:
        res["tflite_odt"].update(
            build_ms=odt["build_ms"],
            interpreter=odt["runner"].backend,
            model_bytes=odt["bytes"],
            loss_first=float(np.mean([l[0] for l in tally.losses])),
            loss_last=float(np.mean([l[1] for l in tally.losses])),
            steps=ft_steps,
        )
    return res


def run_adaptation(
    bundle_path,
    data,
    *,
    ways_list=(5, 20),
    shots: int = 5,
    queries: int = 15,
    tasks: int = 5,
    threads: int = 2,
    keras_backbone=None,
    odt_backend: str | None = None,
    seed: int = 0,
    say=print,
) -> dict:
    """Time and score every method on the same ``tasks`` episodes per way count; returns the section."""
    from metalite.runtime import FewShotClassifier
    from metalite.training.datasets import DataError
    from metalite.training.episodes import EpisodeSampler

    t0 = time.perf_counter()
    clf = FewShotClassifier(bundle_path, num_threads=threads, delegate="cpu", cache_size=0)
    load_ms = (time.perf_counter() - t0) * 1000
    spec = clf.head_spec
    steps = int(spec.adaptation.get("steps", 0))
    ft_steps = steps if steps > 0 else DEFAULT_FINETUNE["steps"]
    ft_lr = float(spec.adaptation.get("lr", 0.1))
    methods = _methods(clf, spec, steps, ft_steps, ft_lr)
    section = {
        "tasks_per_setting": tasks,
        "warmup_tasks": 1,
        "shots": shots,
        "queries": queries,
        "threads": threads,
        "runtime_load_ms": load_ms,
        "interpreter": clf.backend,
        "methods": methods,
        "settings": {},
    }
    if keras_backbone is None:
        section["notes"] = ["keras_finetune skipped: no Keras model (pass --model MODEL_DIR)"]
    for ways in ways_list:
        key = f"{ways}way{shots}shot"
        try:
            sampler = EpisodeSampler(data, ways, shots, queries, seed=seed + ways)
        except DataError as e:
            section["settings"][key] = {"skipped": str(e)}
            continue
        say(f"adaptation {key}: {tasks} tasks")
        odt = _odt(spec, clf.embedding_dim, ways, odt_backend)
        for task in range(
            tasks + 1
        ):  # task 0 is an untimed warm-up (interpreter resizes, Keras tracing)
            if task <= 1:
                tally = _Tally(methods)
            s_idx, q_idx = sampler.sample_indices()
            ys, yq = np.repeat(np.arange(ways), shots), np.repeat(np.arange(ways), queries)
            s_img, q_img = data.images[s_idx], data.images[q_idx]
            q_emb = clf.embed(q_img)
            emb = _metalite_task(clf, spec, s_img, ys, q_img, yq, ways, tally)
            if "runner" in odt:
                _odt_task(odt["runner"], emb, q_emb, ys, yq, ways, ft_steps, ft_lr, tally)
            _pycoral_task(emb, q_emb, ys, yq, ways, seed, tally)
            if keras_backbone is not None:
                _keras_task(
                    keras_backbone,
                    spec,
                    s_img,
                    ys,
                    q_img,
                    yq,
                    ways,
                    ft_steps,
                    ft_lr,
                    tally.T,
                    tally.A,
                )
        section["settings"][key] = _setting_results(tally, methods, odt, ft_steps)
    return section


def _keras_task(backbone, spec, s_img, ys, q_img, yq, ways, steps, lr, T, A):
    from metalite.export.tfcompat import keras, tf

    def emb_of(imgs):
        x = (1.0 - imgs.astype(np.float32) / 255.0)[..., None]
        return backbone(tf.constant(x), training=False).numpy()

    t = time.perf_counter()
    e = emb_of(s_img)
    T["keras_finetune"]["embed"].append(time.perf_counter() - t)
    t = time.perf_counter()
    h = headlib.hidden_forward(spec.weights, spec.activations, e)[-1]
    wc, bc = headlib.prototype_classifier(h, ys, ways, float(spec.adaptation.get("scale", 1.0)))
    layers = [
        keras.layers.Dense(w.shape[1], activation=a if a == "relu" else None, trainable=False)
        for (w, _), a in zip(spec.weights, spec.activations)
    ]
    layers.append(keras.layers.Dense(ways))
    model = keras.Sequential(layers)
    model.build((None, e.shape[1]))
    for layer, (w, b) in zip(model.layers, spec.weights + [(wc, bc)]):
        layer.set_weights([w, b])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(e, ys, batch_size=len(e), epochs=steps, verbose=0, shuffle=False)
    T["keras_finetune"]["head"].append(time.perf_counter() - t)
    logits = model(emb_of(q_img), training=False).numpy()
    A["keras_finetune"].append(float(np.mean(logits.argmax(1) == yq)))


# ----------------------------------------------------------------------------- headline, report.md, plot, README rows
def adaptation_headline(h, report) -> None:
    """The headline's time of each other method as a multiple of metalite's, per task setting."""
    for key, res in (get(report, "adaptation", "settings") or {}).items():
        me = get(res, "metalite", "total_ms")
        for m in ("tflite_odt", "keras_finetune", "pycoral_sgd"):
            h[f"adapt_{key}_{m}_over_metalite"] = ratio(get(res, m, "total_ms"), me)
        h[f"adapt_{key}_metalite_ms"] = me


def adaptation_headline_lines(report, h) -> list:
    """The headline's lines on learning a task: the other methods' time as a multiple of metalite's."""
    L = []
    for key in get(report, "adaptation", "settings") or {}:
        parts = [
            f"{METHODS[m]} {h[f'adapt_{key}_{m}_over_metalite']:.1f}× its time"
            for m in ("tflite_odt", "keras_finetune", "pycoral_sgd")
            if h.get(f"adapt_{key}_{m}_over_metalite") is not None
        ]
        if parts:
            L.append(
                f"- Learning a {key} task: metalite {h[f'adapt_{key}_metalite_ms']:.1f} ms; "
                + ", ".join(parts)
                + " (accuracies in the adaptation table)."
            )
    return L


def adaptation_lines(report, plot_files) -> list:
    ad = report.get("adaptation", {})
    fits = ", ".join(
        k + " " + f(r.get("metalite", {}).get("fit_ms"), "{:.1f}") + " ms"
        for k, r in (ad.get("settings") or {}).items()
        if "skipped" not in r
    )
    L = [
        "## adaptation",
        "",
        f"{ad.get('tasks_per_setting')} tasks per setting ({ad.get('shots')}-shot, {ad.get('queries')} queries per "
        f"class), {ad.get('threads')} interpreter threads; medians of wall time in ms, accuracy on the tasks' "
        f"queries; every part timed warm (after one untimed embedding of the task's support set). total = "
        f"embedding + head fitting per task (median of the sums); metalite's end-to-end "
        f"FewShotClassifier.fit (with preprocessing) median: {fits}. Runtime load (open + verify bundle, create "
        f"interpreter): {f(ad.get('runtime_load_ms'), '{:.1f}')} ms.",
        "",
    ]
    L += [f"- **{METHODS[m]}**: {how}" for m, how in (ad.get("methods") or {}).items()]
    L += [f"- note: {n}" for n in ad.get("notes") or []]
    L += [
        "",
        "| task | method | embedding ms | head fitting ms | total ms | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for key, res in (ad.get("settings") or {}).items():
        if "skipped" in res:
            L.append(f"| {key} | | skipped: {res['skipped']} | | | |")
            continue
        for m, r in res.items():
            if "skipped" in r:
                L.append(f"| {key} | {METHODS[m]} | skipped: {r['skipped']} | | | |")
            else:
                L.append(
                    f"| {key} | {METHODS[m]} | {f(r.get('embed_ms'), '{:.1f}')} | {f(r.get('head_ms'))} "
                    f"| {f(r.get('total_ms'), '{:.1f}')} | {r['accuracy']:.3f} ± {r['accuracy_ci95']:.3f} |"
                )
        odt = res.get("tflite_odt", {})
        if "loss_first" in odt:
            L.append(
                f"| {key} | (ODT loss over {odt['steps']} train calls) | | | | {odt['loss_first']:.3f} → "
                f"{odt['loss_last']:.3f} |"
            )
    return L + (
        [f"\n![adaptation]({plot_files['adaptation']})"] if "adaptation" in plot_files else []
    )


def adaptation_plot(plt, report, path) -> bool:
    settings = get(report, "adaptation", "settings") or {}
    keys = [k for k, r in settings.items() if "skipped" not in r]
    if not keys:
        return False
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.6), squeeze=False)
    parts = (("embed_ms", "embedding"), ("head_ms", "head fitting"), ("total_ms", "total"))
    for ax, key in zip(axes[0], keys):
        ms = [m for m in METHODS if "total_ms" in settings[key].get(m, {})]
        for i, (field, name) in enumerate(parts):
            ax.bar(
                [j + (i - 1) * 0.27 for j in range(len(ms))],
                [settings[key][m].get(field) or 0 for m in ms],
                0.27,
                label=name,
            )
        names = [
            textwrap.fill(METHODS[m], 14) + f"\nacc {settings[key][m]['accuracy']:.2f}" for m in ms
        ]
        ax.set_xticks(range(len(ms)), names, fontsize=6)
        ax.set_ylabel("ms per task (median), log scale")
        ax.set_yscale("log")
        ax.set_title(f"Learning a {key} task: embedding, head fitting, total", fontsize=8)
        ax.legend(fontsize=6)
    save(plt, fig, path)
    return True


def adaptation_readme_rows(report) -> list:
    """The README's rows on learning a task, one per other method."""
    rows = []
    for key, res in (get(report, "adaptation", "settings") or {}).items():
        me = res.get("metalite", {})
        for m in ("tflite_odt", "keras_finetune", "pycoral_sgd"):
            o = res.get(m, {})
            if me.get("total_ms") and "total_ms" in o:
                rows.append(
                    (
                        f"Learn a {key} task vs {METHODS[m]}",
                        f"{me['total_ms']:.1f} ms, acc {me['accuracy']:.2f}",
                        f"{o['total_ms']:.1f} ms, acc {o['accuracy']:.2f}",
                        f"{o['total_ms'] / me['total_ms']:.1f}× faster",
                    )
                )
    return rows
