"""report.md, PNG plots, headline ratios and the README's benchmark section from a ``metalite bench`` report."""
from __future__ import annotations

from pathlib import Path

LABELS = {"float_keras": "float Keras", "float_tflite": "float TFLite", "pruned_float_tflite": "pruned float TFLite",
          "int8_tflite": "int8 TFLite", "int8_pruned_tflite": "int8 + pruned TFLite"}
METHODS = {"metalite": "metalite runtime", "tflite_odt": "TFLite on-device training",
           "keras_finetune": "Keras fine-tuning", "pycoral_sgd": "pycoral-style SGD"}
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _shipped(report) -> str | None:
    avail = report.get("variants", {}).get("available", {})
    for k in ("int8_pruned_tflite", "int8_tflite"):
        if k in avail and (avail[k].get("source") or "").startswith("bundle"):
            return k
    return None


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _ratio(a, b):
    return a / b if a and b else None


def headline(report) -> dict:
    """The ratios report.md and the README lead with (None where a side is missing)."""
    ship = _shipped(report)
    lat = report.get("latency", {})
    h = {"shipped_variant": ship}
    keras = _get(lat, "keras", "results") or {}
    for b in (1, 32):
        q = _get(lat, "tflite", ship, "ai_edge_litert", f"b{b}_t1", "median_ms")
        k = _get(keras, f"direct_b{b}", "median_ms")
        kp = _get(keras, f"predict_b{b}", "median_ms")
        kf = _get(keras, f"tffunction_b{b}", "median_ms")
        h[f"keras_tffunction_ms_b{b}"] = kf
        h[f"keras_tffunction_over_int8_latency_b{b}"] = _ratio(kf, q)
        h[f"int8_ms_b{b}"] = q
        h[f"keras_direct_ms_b{b}"] = k
        h[f"keras_predict_ms_b{b}"] = kp
        h[f"keras_over_int8_latency_b{b}"] = _ratio(k, q)
        h[f"keras_predict_over_int8_latency_b{b}"] = _ratio(kp, q)
    size = report.get("size", {})
    ship_b = _get(size, ship, "bytes")
    h["int8_bytes"] = ship_b
    h["int8_gzip_bytes"] = _get(size, ship, "gzip_bytes")
    for ref in ("float_tflite", "float_keras"):
        h[f"{ref}_bytes"] = _get(size, ref, "bytes")
        h[f"{ref}_over_int8_size"] = _ratio(_get(size, ref, "bytes"), ship_b)
    acc = _get(report, "accuracy", "results") or {}
    for v in (ship, "float_keras", "float_tflite"):
        for key in ("5way1shot", "20way1shot"):
            m = _get(acc, v, key, "mean")
            if m is not None:
                h[f"acc_{v}_{key}"] = m
    settings = _get(report, "adaptation", "settings") or {}
    for key, res in settings.items():
        me = _get(res, "metalite", "total_ms")
        for m in ("tflite_odt", "keras_finetune", "pycoral_sgd"):
            other = _get(res, m, "total_ms")
            h[f"adapt_{key}_{m}_over_metalite"] = _ratio(other, me)
        h[f"adapt_{key}_metalite_ms"] = me
    return h


def _f(x, fmt="{:.2f}", none="—"):
    return none if x is None else fmt.format(x)


def _kib(n):
    return "—" if n is None else f"{n / 1024:.1f} KiB"


# ----------------------------------------------------------------------------- plots
def plots(report, out: Path) -> dict:
    """Write accuracy.png, latency.png, adaptation.png, size.png into ``out``; returns {name: file name}."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    out = Path(out)
    made = {}

    acc = _get(report, "accuracy", "results") or {}
    if acc:
        keys = sorted({k for r in acc.values() for k in r})
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(keys)), 3.6))
        w = 0.8 / max(1, len(acc))
        for i, (v, res) in enumerate(acc.items()):
            xs = [j + i * w for j, k in enumerate(keys) if k in res]
            ax.bar(xs, [res[k]["mean"] for k in keys if k in res], w, yerr=[res[k]["ci95"] for k in keys if k in res],
                   label=LABELS.get(v, v), capsize=2)
        ax.set_xticks([j + w * (len(acc) - 1) / 2 for j in range(len(keys))], keys, rotation=20, fontsize=8)
        ax.set_ylabel("accuracy (95% CI)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.set_title(f"Held-out accuracy ({_get(report, 'accuracy', 'data')})", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "accuracy.png", dpi=110)
        plt.close(fig)
        made["accuracy"] = "accuracy.png"

    lat = report.get("latency", {})
    rows = []
    for v, per in (lat.get("tflite") or {}).items():
        for be, res in per.items():
            for b in (1, 32):
                r = res.get(f"b{b}_t1") if isinstance(res, dict) else None
                if r and "median_ms" in r:
                    rows.append((f"{LABELS.get(v, v)}\n{be} b{b}", r["median_ms"], r["iqr_ms"]))
    for b in (1, 32):
        r = _get(lat, "keras", "results", f"direct_b{b}")
        if r:
            rows.append((f"float Keras\nmodel(x) b{b}", r["median_ms"], r["iqr_ms"]))
    if rows:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
        ax.barh(range(len(rows)), [r[1] for r in rows], xerr=[r[2] for r in rows], capsize=2, color="tab:blue")
        ax.set_yticks(range(len(rows)), [r[0].replace("\n", " · ") for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("ms per image (median, IQR; 1 thread for TFLite)")
        ax.set_title("Backbone latency", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        made["latency"] = "latency.png"

    settings = _get(report, "adaptation", "settings") or {}
    if settings:
        keys = [k for k, r in settings.items() if "skipped" not in r]
        if keys:
            fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
            for ax, key in zip(axes[0], keys):
                ms = [m for m in METHODS if "total_ms" in settings[key].get(m, {})]
                emb = [settings[key][m].get("embed_ms") or 0 for m in ms]
                head = [settings[key][m].get("head_ms") or 0 for m in ms]
                ax.bar(range(len(ms)), emb, label="embedding")
                ax.bar(range(len(ms)), head, bottom=emb, label="head fitting")
                ax.set_xticks(range(len(ms)), [f"{METHODS[m]}\nacc {settings[key][m]['accuracy']:.2f}" for m in ms],
                              fontsize=6)
                ax.set_ylabel("ms (median)")
                ax.set_yscale("log")
                ax.set_title(f"Learning a {key} task", fontsize=9)
                ax.legend(fontsize=7)
            fig.tight_layout()
            fig.savefig(out / "adaptation.png", dpi=110)
            plt.close(fig)
            made["adaptation"] = "adaptation.png"

    size = {k: v for k, v in (report.get("size") or {}).items() if k in LABELS}
    if size:
        fig, ax = plt.subplots(figsize=(6, 3))
        names = list(size)
        ax.bar([i - 0.2 for i in range(len(names))], [size[n]["bytes"] / 1024 for n in names], 0.4, label="raw")
        ax.bar([i + 0.2 for i in range(len(names))], [size[n]["gzip_bytes"] / 1024 for n in names], 0.4, label="gzip -9")
        ax.set_xticks(range(len(names)), [LABELS[n] for n in names], fontsize=7, rotation=15)
        ax.set_ylabel("KiB")
        ax.legend(fontsize=7)
        ax.set_title("Backbone size", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "size.png", dpi=110)
        plt.close(fig)
        made["size"] = "size.png"
    return made


# ----------------------------------------------------------------------------- markdown
def markdown(report, plot_files: dict | None = None) -> str:
    h = report.get("headline") or headline(report)
    m = report.get("machine", {})
    L = [f"# metalite bench ({report.get('mode')} run)", "",
         f"Bundle `{_get(report, 'bundle', 'path')}` — training {_get(report, 'bundle', 'training', 'algorithm')} on "
         f"`{_get(report, 'bundle', 'training', 'data')}`. Generated {m.get('date')} in {report.get('elapsed_s', 0):.0f} s.", "",
         "## Headline", ""]
    ship = LABELS.get(h.get("shipped_variant"), h.get("shipped_variant"))
    L += [f"- Latency, {ship} (ai-edge-litert, 1 thread) vs float Keras `model(x)`: "
          f"{_f(h.get('keras_over_int8_latency_b1'), '{:.1f}')}× faster at batch 1 "
          f"({_f(h.get('int8_ms_b1'), '{:.3f}')} vs {_f(h.get('keras_direct_ms_b1'), '{:.3f}')} ms/image), "
          f"{_f(h.get('keras_over_int8_latency_b32'), '{:.1f}')}× at batch 32 "
          f"({_f(h.get('int8_ms_b32'), '{:.3f}')} vs {_f(h.get('keras_direct_ms_b32'), '{:.3f}')} ms/image); "
          f"vs `model.predict` at batch 1: {_f(h.get('keras_predict_over_int8_latency_b1'), '{:.0f}')}×; "
          f"vs the compiled `tf.function(model)`: {_f(h.get('keras_tffunction_over_int8_latency_b1'), '{:.1f}')}× at batch 1, "
          f"{_f(h.get('keras_tffunction_over_int8_latency_b32'), '{:.1f}')}× at batch 32.",
          f"- Size, {ship} vs float TFLite: {_f(h.get('float_tflite_over_int8_size'), '{:.1f}')}× smaller "
          f"({_kib(h.get('int8_bytes'))} vs {_kib(h.get('float_tflite_bytes'))}; gzip {_kib(h.get('int8_gzip_bytes'))})."]
    for key in (_get(report, "adaptation", "settings") or {}):
        parts = []
        for mth in ("tflite_odt", "keras_finetune", "pycoral_sgd"):
            r = h.get(f"adapt_{key}_{mth}_over_metalite")
            if r is not None:
                parts.append(f"{METHODS[mth]} {r:.1f}× its time")
        if parts:
            L.append(f"- Learning a {key} task: metalite {_f(h.get(f'adapt_{key}_metalite_ms'), '{:.1f}')} ms; "
                     + ", ".join(parts) + " (accuracies in the adaptation table).")
    L += ["", "## machine", "",
          f"{m.get('cpu')} ({m.get('machine')}), {m.get('cores')} cores ({m.get('cores_available')} available), "
          f"{m.get('os')}, Python {m.get('python')}.", "",
          "Libraries: " + ", ".join(f"{k} {v}" for k, v in (m.get("libraries") or {}).items() if v) + ".", ""]
    blas = m.get("blas") or {}
    libs = blas.get("libraries")
    L.append("BLAS: " + ("; ".join(f"{d.get('internal_api')} {d.get('version')} kernel {d.get('architecture')}, "
                                   f"{d.get('num_threads')} threads" for d in libs) if libs
                         else f"{blas.get('note', '')} numpy build: {blas.get('numpy_build_blas')}")
             + f". OPENBLAS_CORETYPE={blas.get('OPENBLAS_CORETYPE') or 'unset'}.")
    L += ["", "Variants: " + "; ".join(f"**{LABELS[k]}** ({v['source']})" for k, v in
                                      _get(report, "variants", "available").items()) + ".", ""]
    for k, why in (_get(report, "variants", "missing") or {}).items():
        L.append(f"- not benchmarked: {LABELS.get(k, k)} — {why}")

    acc = report.get("accuracy", {})
    L += ["", "## accuracy", "",
          f"{acc.get('episodes')} episodes per setting, {acc.get('queries')} queries per class, held-out split "
          f"`{acc.get('split')}` of `{acc.get('data')}` ({acc.get('classes')} classes, {acc.get('images')} images); "
          f"{acc.get('adaptation')}. Mean ± 95% CI.", ""]
    keys = sorted({k for r in (acc.get("results") or {}).values() for k in r})
    if keys:
        L += ["| variant | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for v, res in acc["results"].items():
            L.append(f"| {LABELS.get(v, v)} | " + " | ".join(
                f"{res[k]['mean']:.3f} ± {res[k]['ci95']:.3f}" if k in res else "—" for k in keys) + " |")
    for n in acc.get("notes") or []:
        L.append(f"\n- note: {n}")
    for k, why in (acc.get("skipped") or {}).items():
        L.append(f"\n- {k} skipped: {why}")
    if plot_files and "accuracy" in plot_files:
        L += ["", f"![accuracy]({plot_files['accuracy']})"]

    L += ["", "## size", "", "| variant | bytes | gzip -9 | parameters | stored sparsity | what |", "|---|---|---|---|---|---|"]
    for k, s in (report.get("size") or {}).items():
        L.append(f"| {LABELS.get(k, k)} | {s['bytes']} | {s['gzip_bytes']} | {s.get('parameters', '—')} | "
                 f"{_f(s.get('sparsity'), '{:.1%}')} | {s.get('what', '')} |")

    lat = report.get("latency", {})
    L += ["", "## latency", "", f"{lat.get('unit')}; {lat.get('warmup')} warm-up calls, {lat.get('runs')} timed calls. "
          f"OPENBLAS_CORETYPE={lat.get('OPENBLAS_CORETYPE') or 'unset'}.", ""]
    for be, info in (lat.get("interpreters") or {}).items():
        L.append(f"- {be}: {info.get('status')}" + (f" {info.get('version')}" if info.get("version") else "")
                 + (f" (numpy {info['numpy']}, {info.get('where') or info.get('python')})" if info.get("numpy") else ""))
        for v, how in (info.get("how") or {}).items():
            L.append(f"  - {LABELS.get(v, v)}: {how}")
    if lat.get("ratios"):
        L += ["", f"{lat.get('order', '')}.", "", "| variant | batch, threads | interpreter ratio (median of rounds) | q1–q3 |",
              "|---|---|---|---|"]
        for v, cells in lat["ratios"].items():
            for cell, r in cells.items():
                name = next(k for k in r if "/" in k)
                L.append(f"| {LABELS.get(v, v)} | {cell} | {name} = {r[name]:.2f} | {r['q1']:.2f}–{r['q3']:.2f} |")
    L += ["", "| variant | interpreter | batch | threads | median ms/image | IQR |", "|---|---|---|---|---|---|"]
    for v, per in (lat.get("tflite") or {}).items():
        for be, res in per.items():
            if "error" in res:
                L.append(f"| {LABELS.get(v, v)} | {be} | — | — | error: {res['error']} | |")
                continue
            for cell, r in res.items():
                if "median_ms" in r:
                    L.append(f"| {LABELS.get(v, v)} | {be} | {r['batch']} | {r['threads']} | {r['median_ms']:.3f} | "
                             f"{r['iqr_ms']:.3f} |")
    kr = _get(lat, "keras", "results")
    if kr:
        for cell, r in kr.items():
            L.append(f"| float Keras | TF {_get(lat, 'keras', 'tensorflow')} `{r['call']}` | {r['batch']} | default | "
                     f"{r['median_ms']:.3f} | {r['iqr_ms']:.3f} |")
    elif _get(lat, "keras", "skipped"):
        L.append(f"\nfloat Keras reference skipped: {lat['keras']['skipped']}")
    if plot_files and "latency" in plot_files:
        L += ["", f"![latency]({plot_files['latency']})"]

    ad = report.get("adaptation", {})
    L += ["", "## adaptation", "",
          f"{ad.get('tasks_per_setting')} tasks per setting ({ad.get('shots')}-shot, {ad.get('queries')} queries per "
          f"class), {ad.get('threads')} interpreter threads; medians of wall time in ms, accuracy on the tasks' "
          f"queries. total = embedding + head fitting per task (median of the sums); metalite's end-to-end "
          f"FewShotClassifier.fit (with preprocessing) median: "
          f"{', '.join(k + ' ' + _f(r.get('metalite', {}).get('fit_ms'), '{:.1f}') + ' ms' for k, r in (ad.get('settings') or {}).items() if 'skipped' not in r)}. "
          f"Runtime load (open + verify bundle, create interpreter): {_f(ad.get('runtime_load_ms'), '{:.1f}')} ms.", ""]
    for mth, how in (ad.get("methods") or {}).items():
        L.append(f"- **{METHODS[mth]}**: {how}")
    for n in ad.get("notes") or []:
        L.append(f"- note: {n}")
    L += ["", "| task | method | embedding ms | head fitting ms | total ms | accuracy |", "|---|---|---|---|---|---|"]
    for key, res in (ad.get("settings") or {}).items():
        if "skipped" in res:
            L.append(f"| {key} | — | skipped: {res['skipped']} | | | |")
            continue
        for mth, r in res.items():
            if "skipped" in r:
                L.append(f"| {key} | {METHODS[mth]} | skipped: {r['skipped']} | | | |")
            else:
                L.append(f"| {key} | {METHODS[mth]} | {_f(r.get('embed_ms'), '{:.1f}')} | {_f(r.get('head_ms'), '{:.2f}')} "
                         f"| {_f(r.get('total_ms'), '{:.1f}')} | {r['accuracy']:.3f} ± {r['accuracy_ci95']:.3f} |")
        odt = res.get("tflite_odt", {})
        if "loss_first" in odt:
            L.append(f"| {key} | (ODT loss over {odt['steps']} train calls) | | | | {odt['loss_first']:.3f} → "
                     f"{odt['loss_last']:.3f} |")
    if plot_files and "adaptation" in plot_files:
        L += ["", f"![adaptation]({plot_files['adaptation']})"]

    mem = report.get("memory", {})
    L += ["", "## memory", "", f"{mem.get('what')}. Peak RSS = `ru_maxrss` of the child (started from a small launcher process); "
          "VmHWM and the other columns are the child's own /proc/self/status high-water marks.", "",
          "| interpreter | peak RSS MiB | VmHWM MiB | python+numpy baseline MiB | after load MiB | numpy | TensorFlow imported |",
          "|---|---|---|---|---|---|---|"]
    for be, r in (mem.get("runs") or {}).items():
        if "error" in r:
            L.append(f"| {be} | error: {r['error']} | | | | |")
        else:
            L.append(f"| {be} | {r['peak_rss_mib']:.1f} | {r.get('vmhwm_mib', 0):.1f} | {r['python_numpy_baseline_mib']:.1f} | "
                     f"{r['after_load_mib']:.1f} | {r['numpy']} | {r['tensorflow_imported']} |")
    L += ["", "Regenerate: `metalite bench BUNDLE --out DIR [--model MODEL_DIR] [--quick]`.", ""]
    return "\n".join(L)


# ----------------------------------------------------------------------------- README
def readme_section(report, plot: str | None = "benchmarks/reference/latency.png",
                   source: str = "benchmarks/reference/report.json") -> str:
    """Markdown for between the README's bench markers: the headline table and one plot."""
    h = report.get("headline") or headline(report)
    m = report.get("machine", {})
    ship = LABELS.get(h.get("shipped_variant"), h.get("shipped_variant"))
    acc = _get(report, "accuracy", "results") or {}
    rows = [("Latency, batch 1 (ms/image)", f"{_f(h.get('int8_ms_b1'), '{:.3f}')} ({ship}, ai-edge-litert, 1 thread)",
             f"{_f(h.get('keras_direct_ms_b1'), '{:.3f}')} (float Keras `model(x)`)",
             f"{_f(h.get('keras_over_int8_latency_b1'), '{:.1f}')}×"),
            ("Latency, batch 32 (ms/image)", _f(h.get("int8_ms_b32"), "{:.3f}"), _f(h.get("keras_direct_ms_b32"), "{:.3f}"),
             f"{_f(h.get('keras_over_int8_latency_b32'), '{:.1f}')}×"),
            ("Backbone size", _kib(h.get("int8_bytes")), f"{_kib(h.get('float_tflite_bytes'))} (float TFLite)",
             f"{_f(h.get('float_tflite_over_int8_size'), '{:.1f}')}× smaller")]
    ship_key = h.get("shipped_variant")
    for key in ("5way1shot", "20way1shot"):
        a, f = _get(acc, ship_key, key), _get(acc, "float_keras", key) or _get(acc, "float_tflite", key)
        if a:
            rows.append((f"Accuracy {key} (held-out)", f"{a['mean']:.3f} ± {a['ci95']:.3f}",
                         f"{f['mean']:.3f} ± {f['ci95']:.3f}" if f else "—",
                         f"{(a['mean'] - f['mean']) * 100:+.1f} pts" if f else "—"))
    settings = _get(report, "adaptation", "settings") or {}
    for key, res in settings.items():
        me = res.get("metalite", {})
        if "total_ms" not in me:
            continue
        for mth in ("tflite_odt", "keras_finetune", "pycoral_sgd"):
            o = res.get(mth, {})
            if "total_ms" in o:
                rows.append((f"Learn a {key} task vs {METHODS[mth]}",
                             f"{me['total_ms']:.1f} ms, acc {me['accuracy']:.2f}",
                             f"{o['total_ms']:.1f} ms, acc {o['accuracy']:.2f}",
                             f"{o['total_ms'] / me['total_ms']:.1f}× faster" if me["total_ms"] else "—"))
    peak = _get(report, "memory", "runs", "ai_edge_litert", "peak_rss_mib")
    L = [f"Measured by `metalite bench` ({report.get('mode')} run) on {m.get('cpu')}, {m.get('cores')} cores, "
         f"Python {m.get('python')}; regenerated from `{source}` by `python -m metalite.tools.readme_bench`.", "",
         "| | metalite | reference | ratio |", "|---|---|---|---|"]
    L += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    if peak:
        L.append(f"| Peak RSS, runtime-only process (load, adapt, predict) | {peak:.0f} MiB | | |")
    if plot:
        L += ["", f"![latency]({plot})"]
    return "\n".join(L)


def replace_between_markers(text: str, body: str) -> str:
    """``text`` with everything strictly between the bench markers replaced by ``body``; ValueError if absent."""
    i = text.find(START)
    j = text.find(END, i + len(START)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise ValueError(f"README has no {START} ... {END} markers")
    return text[: i + len(START)] + "\n" + body.strip("\n") + "\n" + text[j:]
