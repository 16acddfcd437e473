"""report.md of a ``metalite bench`` report: one writer per section, each returning its lines."""
from __future__ import annotations

from .accuracy import data_name, split_phrase
from .headline import BACKEND, METHODS, get, headline
from .machine import processor_text

VARIANT_NAMES = {"float_keras": "float Keras", "float_tflite": "float TFLite", "int8_tflite": "int8 TFLite, not pruned",
                 "pruned_float_tflite": "pruned float TFLite", "int8_pruned_tflite": "int8 TFLite, pruned"}


def f(x, fmt="{:.2f}"):
    return "n/a" if x is None else fmt.format(x)


def kib(n):
    return "n/a" if n is None else f"{n / 1024:.1f} KiB"


def _name(report, key):
    return get(report, "variants", "available", key, "label") or VARIANT_NAMES.get(key, key)


def loadavg_text(v) -> str:
    """'0.12/0.30/0.41' of a load average triple, or 'n/a'."""
    return "/".join(f"{x:.2f}" for x in v) if v else "n/a"


def load_line(load) -> str:
    """One line on how busy the machine was while timing."""
    if not load:
        return ""
    others = load.get("other_processes_cores")
    la = loadavg_text
    return (f"Load average (1/5/15 min) {la(load.get('loadavg_before'))} before, {la(load.get('loadavg_after'))} after "
            f"{load.get('seconds')} s of timing" + (f"; other processes used {others:.2f} of {load.get('cores')} cores "
                                                    "on average meanwhile" if others is not None else "") + ".")


def headline_lines(report, h) -> list:
    ship = h.get("shipped_label") or "the bundle's backbone"
    L = ["## Headline", ""]
    if h.get("busy_warning"):
        L += [f"> **Warning**: {h['busy_warning']}.", ""]
    for ref, what in (("float_tflite", "float TFLite (the float model before compression)"),
                      ("int8_tflite", "int8 TFLite of the unpruned model")):
        if h.get(f"speedup_vs_{ref}_b1") is not None:
            L.append(f"- Latency, {ship} vs {what} ({BACKEND}, 1 thread, interleaved rounds): "
                     f"{h[f'speedup_vs_{ref}_b1']:.2f}× faster at batch 1 ({f(h['int8_ms_b1'], '{:.4f}')} vs "
                     f"{f(h[f'{ref}_ms_b1'], '{:.4f}')} ms/image)"
                     + (f", {h[f'speedup_vs_{ref}_b32']:.2f}× at batch 32" if h.get(f"speedup_vs_{ref}_b32") else "")
                     + " (median of the ratios within each round).")
    if h.get("int8_ms_b1") is not None and h.get("int8_gmacs_b1") is not None:
        L.append(f"- Cost: {ship} does {h['int8_macs'] / 1e6:.2f} M multiply-accumulates per image; "
                 f"{h['int8_ms_b1']:.4f} ms/image at batch 1 is {h['int8_gmacs_b1']:.1f} GMAC/s on one core.")
    if h.get("keras_tffunction_over_int8_latency_b1") is not None:
        L.append(f"- vs float Keras (TensorFlow, all cores, its own rounds; ratio of medians): "
                 f"`tf.function(model)` {h['keras_tffunction_over_int8_latency_b1']:.1f}× slower at batch 1, "
                 f"{f(h.get('keras_tffunction_over_int8_latency_b32'), '{:.1f}')}× at batch 32; eager `model(x)` "
                 f"{f(h.get('keras_direct_over_int8_latency_b1'), '{:.1f}')}×; `model.predict` "
                 f"{f(h.get('keras_predict_over_int8_latency_b1'), '{:.0f}')}× at batch 1.")
    for ref, what in (("float_tflite", "float TFLite"), ("int8_tflite", "unpruned int8 TFLite")):
        if h.get(f"{ref}_over_int8_size") is not None:
            L.append(f"- Size, {ship} vs {what}: {h[f'{ref}_over_int8_size']:.1f}× smaller "
                     f"({kib(h['int8_bytes'])} vs {kib(h[f'{ref}_bytes'])}; gzip {kib(h['int8_gzip_bytes'])}).")
    for key in (get(report, "adaptation", "settings") or {}):
        parts = [f"{METHODS[m]} {h[f'adapt_{key}_{m}_over_metalite']:.1f}× its time"
                 for m in ("tflite_odt", "keras_finetune", "pycoral_sgd")
                 if h.get(f"adapt_{key}_{m}_over_metalite") is not None]
        if parts:
            L.append(f"- Learning a {key} task: metalite {h[f'adapt_{key}_metalite_ms']:.1f} ms; " + ", ".join(parts)
                     + " (accuracies in the adaptation table).")
    best = h.get("pareto_best")
    if best:
        L.append(f"- Structured pruning ({best['protocol']} error through the runtime, {best['runs']} paired runs): "
                 f"{best['label']} is {best['speedup_b1']:.2f}× faster per image than {best['reference']} "
                 f"(batch 1, within rounds) at {100 * best['error_diff']:+.2f} ± {100 * best['error_diff_ci95']:.2f} pt "
                 f"error ({100 * best['error']:.2f}%, {best['kib']:.1f} KiB); "
                 + ("meets" if best["meets_goal"] else "no bundle meets") + " the goal (pareto section).")
    missing = get(report, "variants", "missing") or {}
    if missing:
        L.append("- Not measured: " + "; ".join(f"{VARIANT_NAMES.get(k, k)} ({why})" for k, why in missing.items()) + ".")
    return L


def _library_text(d: dict) -> str:
    """One threadpoolctl entry, naming only what it reports (an OpenMP runtime has no version or kernel)."""
    words = [d.get("internal_api"), d.get("version"),
             f"kernel {d['architecture']}" if d.get("architecture") else None]
    threads = f", {d['num_threads']} threads" if d.get("num_threads") is not None else ""
    return " ".join(str(w) for w in words if w) + threads


def machine_lines(report) -> list:
    m = report.get("machine", {})
    blas = m.get("blas") or {}
    libs = blas.get("libraries")
    L = ["## machine", "",
         f"{processor_text(m)}; {m.get('cores')} cores ({m.get('cores_available')} available), "
         f"{m.get('os')}, Python {m.get('python')}.", "",
         "Libraries: " + ", ".join(f"{k} {v}" for k, v in (m.get("libraries") or {}).items() if v) + ".", "",
         "BLAS: " + ("; ".join(_library_text(d) for d in libs) if libs
                     else f"{blas.get('note', '')} numpy build: {blas.get('numpy_build_blas')}")
         + f". OPENBLAS_CORETYPE={blas.get('OPENBLAS_CORETYPE') or 'unset'}.", ""]
    avail = get(report, "variants", "available") or {}
    L.append("Variants: " + "; ".join(f"**{v['label']}** ({v['source']})" for v in avail.values()) + ".")
    return L


def accuracy_lines(report, plot_files) -> list:
    acc = report.get("accuracy", {})
    L = ["## accuracy", "",
         f"{acc.get('episodes')} episodes per setting, {acc.get('queries')} queries per class, {split_phrase(acc)} "
         f"({acc.get('classes')} classes, {acc.get('images')} images); {acc.get('adaptation')}. Mean ± 95% CI.", ""]
    keys = sorted({k for r in (acc.get("results") or {}).values() for k in r})
    if keys:
        L += ["| variant | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for v, res in acc["results"].items():
            L.append(f"| {_name(report, v)} | " + " | ".join(
                f"{res[k]['mean']:.3f} ± {res[k]['ci95']:.3f}" if k in res else "n/a" for k in keys) + " |")
    L += [f"\n- note: {n}" for n in acc.get("notes") or []]
    L += [f"\n- {k} skipped: {why}" for k, why in (acc.get("skipped") or {}).items()]
    return L + ([f"\n![accuracy]({plot_files['accuracy']})"] if "accuracy" in plot_files else [])


def size_lines(report, plot_files) -> list:
    L = ["## size", "", "| variant | bytes | gzip -9 | parameters | stored sparsity | MMACs/image | what |",
         "|---|---|---|---|---|---|---|"]
    for k, s in (report.get("size") or {}).items():
        L.append(f"| {_name(report, k)} | {s['bytes']} | {s['gzip_bytes']} | {s.get('parameters', '')} | "
                 f"{f(s.get('sparsity'), '{:.1%}') if 'sparsity' in s else ''} | "
                 f"{f(s['macs'] / 1e6, '{:.2f}') if s.get('macs') else ''} | {s.get('what', '')} |")
    return L + ([f"\n![size]({plot_files['size']})"] if "size" in plot_files else [])


def _speedups(r) -> str:
    return ", ".join(f"{s['median']:.2f}× vs {ref} [{s['q1']:.2f}–{s['q3']:.2f}]" for ref, s in
                     (r.get("speedup_vs") or {}).items())


def interpreter_ratio_lines(report) -> list:
    """The same variant on the two interpreters, round by round (tflite-runtime time / ai-edge-litert time)."""
    lat = report.get("latency", {})
    if not lat.get("ratios"):
        return []
    L = ["", f"{lat.get('order', '')}.", "", "| variant | batch, threads | interpreter ratio (median of rounds) | q1–q3 |",
         "|---|---|---|---|"]
    for v, cells in lat["ratios"].items():
        for cell, r in cells.items():
            name = next(k for k in r if "/" in k)
            L.append(f"| {_name(report, v)} | {cell} | {name} = {r[name]:.2f} | {r['q1']:.2f}–{r['q3']:.2f} |")
    return L


def latency_lines(report, plot_files) -> list:
    lat = report.get("latency", {})
    L = ["## latency", "", f"{lat.get('unit')}. {lat.get('rounds')} rounds of {lat.get('calls_per_round')} calls "
         f"after {lat.get('warmup')} warm-up calls. OPENBLAS_CORETYPE={lat.get('OPENBLAS_CORETYPE') or 'unset'}.", "",
         load_line(lat.get("load")), ""]
    if get(lat, "load", "warning"):
        L += [f"> **Warning**: {lat['load']['warning']}.", ""]
    for be, info in (lat.get("interpreters") or {}).items():
        L.append(f"- {be}: {info.get('status')}" + (f" {info.get('version')}" if info.get("version") else "")
                 + (f" (numpy {info['numpy']}, {info.get('where') or info.get('python')})" if info.get("numpy") else ""))
        L += [f"  - {_name(report, v)}: {how}" for v, how in (info.get("how") or {}).items()]
    L += interpreter_ratio_lines(report)
    L += ["", "| variant | interpreter | batch | threads | median ms/image | quartiles over rounds | GMAC/s | "
              "speed-up within rounds [quartiles] |", "|---|---|---|---|---|---|---|---|"]
    for v, per in (lat.get("tflite") or {}).items():
        for be, res in per.items():
            if "error" in res:
                L.append(f"| {_name(report, v)} | {be} | | | error: {res['error']} | | | |")
                continue
            for r in res.values():
                if "median_ms" in r:
                    L.append(f"| {_name(report, v)} | {be} | {r['batch']} | {r['threads']} | {r['median_ms']:.4f} | "
                             f"{r['q1_ms']:.4f}–{r['q3_ms']:.4f} | {f(r.get('gmacs_per_s'), '{:.1f}')} | {_speedups(r)} |")
    for r in (get(lat, "keras", "results") or {}).values():
        L.append(f"| float Keras | TF {get(lat, 'keras', 'tensorflow')} `{r['call']}` | {r['batch']} | all cores | "
                 f"{r['median_ms']:.4f} | {r['q1_ms']:.4f}–{r['q3_ms']:.4f} | | |")
    if get(lat, "keras", "skipped"):
        L.append(f"\nfloat Keras reference skipped: {lat['keras']['skipped']}")
    return L + ([f"\n![latency]({plot_files['latency']})"] if "latency" in plot_files else [])


def adaptation_lines(report, plot_files) -> list:
    ad = report.get("adaptation", {})
    fits = ", ".join(k + " " + f(r.get("metalite", {}).get("fit_ms"), "{:.1f}") + " ms"
                     for k, r in (ad.get("settings") or {}).items() if "skipped" not in r)
    L = ["## adaptation", "",
         f"{ad.get('tasks_per_setting')} tasks per setting ({ad.get('shots')}-shot, {ad.get('queries')} queries per "
         f"class), {ad.get('threads')} interpreter threads; medians of wall time in ms, accuracy on the tasks' "
         f"queries; every part timed warm (after one untimed embedding of the task's support set). total = "
         f"embedding + head fitting per task (median of the sums); metalite's end-to-end "
         f"FewShotClassifier.fit (with preprocessing) median: {fits}. Runtime load (open + verify bundle, create "
         f"interpreter): {f(ad.get('runtime_load_ms'), '{:.1f}')} ms.", ""]
    L += [f"- **{METHODS[m]}**: {how}" for m, how in (ad.get("methods") or {}).items()]
    L += [f"- note: {n}" for n in ad.get("notes") or []]
    L += ["", "| task | method | embedding ms | head fitting ms | total ms | accuracy |", "|---|---|---|---|---|---|"]
    for key, res in (ad.get("settings") or {}).items():
        if "skipped" in res:
            L.append(f"| {key} | | skipped: {res['skipped']} | | | |")
            continue
        for m, r in res.items():
            if "skipped" in r:
                L.append(f"| {key} | {METHODS[m]} | skipped: {r['skipped']} | | | |")
            else:
                L.append(f"| {key} | {METHODS[m]} | {f(r.get('embed_ms'), '{:.1f}')} | {f(r.get('head_ms'))} "
                         f"| {f(r.get('total_ms'), '{:.1f}')} | {r['accuracy']:.3f} ± {r['accuracy_ci95']:.3f} |")
        odt = res.get("tflite_odt", {})
        if "loss_first" in odt:
            L.append(f"| {key} | (ODT loss over {odt['steps']} train calls) | | | | {odt['loss_first']:.3f} → "
                     f"{odt['loss_last']:.3f} |")
    return L + ([f"\n![adaptation]({plot_files['adaptation']})"] if "adaptation" in plot_files else [])


def memory_lines(report) -> list:
    mem = report.get("memory", {})
    L = ["## memory", "", f"{mem.get('what')}. Peak RSS = `ru_maxrss` of the child (started from a small launcher "
         "process); VmHWM and the other columns are the child's own /proc/self/status high-water marks.", "",
         "| interpreter | peak RSS MiB | VmHWM MiB | python+numpy baseline MiB | after load MiB | numpy | TensorFlow imported |",
         "|---|---|---|---|---|---|---|"]
    for be, r in (mem.get("runs") or {}).items():
        if "error" in r:
            L.append(f"| {be} | error: {r['error']} | | | | | |")
        else:
            L.append(f"| {be} | {r['peak_rss_mib']:.1f} | {r.get('vmhwm_mib', 0):.1f} | {r['python_numpy_baseline_mib']:.1f} "
                     f"| {r['after_load_mib']:.1f} | {r['numpy']} | {r['tensorflow_imported']} |")
    return L


def pareto_lines(report, plot_files) -> list:
    par = report.get("pareto") or {}
    if not par.get("points"):
        return ["## pareto", "", par.get("skipped") or "not measured"]
    L = ["## pareto", "",
         f"{par['protocol']} error through the device runtime on the "
         f"{split_phrase({**(report.get('accuracy') or {}), 'split': par['split']})} "
         f"({par['runs']} runs, the same runs for every bundle); Δ = paired error difference to the reference "
         f"({par['reference']}). Latency: every bundle's backbone interleaved ({par['interpreter']}, 1 thread); "
         f"speed-up = median of the within-round ratios to the reference. Goal: {par['goal']}.", "",
         load_line(par.get("load")), ""]
    if get(par, "load", "warning"):
        L += [f"> **Warning**: {par['load']['warning']}.", ""]
    L += ["| bundle | widths | error | Δ error vs reference | ms/image b1 | speed-up b1 [quartiles] | ms/image b32 | "
          "KiB | MMACs | meets goal |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in par["points"]:
        s = p["b1_t1"]["speedup"]
        L.append(f"| {p['label']} | {p.get('widths') or ''} | {100 * p['error']:.2f}% ± {100 * p['ci95']:.2f} | "
                 f"{100 * p['error_diff']:+.2f} ± {100 * p['error_diff_ci95']:.2f} pt | {p['b1_t1']['median_ms']:.4f} | "
                 f"{s['median']:.2f}× [{s['q1']:.2f}–{s['q3']:.2f}] | {p['b32_t1']['median_ms']:.4f} | "
                 f"{p['bytes'] / 1024:.1f} | {p['macs'] / 1e6:.2f} | {'yes' if p['meets_goal'] else 'no'} |")
    others = sorted({b for p in par["points"] for b in p.get("other_interpreters") or {}})
    for b in others:
        L += ["", f"The same backbones on {b} (1 thread, batch 1, interleaved in the same rounds): "
              + "; ".join(f"{p['label']} {p['other_interpreters'][b]['b1_t1']['median_ms']:.4f} ms "
                          f"({p['other_interpreters'][b]['b1_t1']['speedup']['median']:.2f}×)"
                          for p in par["points"] if b in (p.get("other_interpreters") or {})) + "."]
    return L + ([f"\n![pareto]({plot_files['pareto']})"] if "pareto" in plot_files else [])


def markdown(report, plot_files: dict | None = None) -> str:
    plot_files = plot_files or {}
    h = report.get("headline") or headline(report)
    m = report.get("machine", {})
    L = [f"# metalite bench ({report.get('mode')} run)", "",
         f"Bundle `{get(report, 'bundle', 'path')}` — trained ({get(report, 'bundle', 'training', 'algorithm')}) on "
         f"{data_name(get(report, 'bundle', 'training', 'data') or '') or 'unrecorded data'}, measured on "
         f"{get(report, 'accuracy', 'data_name')}. Generated {m.get('date')} in {report.get('elapsed_s', 0):.0f} s.", ""]
    sections = [headline_lines(report, h), machine_lines(report), accuracy_lines(report, plot_files),
                size_lines(report, plot_files), latency_lines(report, plot_files), pareto_lines(report, plot_files),
                adaptation_lines(report, plot_files), memory_lines(report)]
    for s in sections:
        L += s + [""]
    L += ["Regenerate: `metalite bench BUNDLE --out DIR [--model MODEL_DIR ...] [--pareto BUNDLE ...] [--quick]`.", ""]
    return "\n".join(L)

