"""``metalite bench``: accuracy, size, latency, adaptation and memory of a bundle, on this machine.

``run_bench(bundle, out, quick=..., model_dirs=[...])`` writes ``report.json``, ``report.md`` and PNG plots
into ``out`` and returns the report dict. Sections (keys of report.json): ``machine``, ``variants``,
``accuracy``, ``size``, ``latency``, ``adaptation``, ``memory``, ``headline``.

Variants of the backbone, each found or made when possible and otherwise listed with the reason it is missing:

- ``float_keras``: the float tf_keras model of a model directory (``--model``, stage "float").
- ``float_tflite``: the bundle's ``backbone_float.tflite``, else converted from ``float_keras``.
- ``pruned_float_tflite``: a pruned bundle's ``backbone_float.tflite`` (``export --float`` of the compressed
  model), else the float TFLite of a pruned model directory (``--model``, stage "pruned").
- ``int8_tflite``: full-integer int8 of the unpruned float model (the bundle's backbone if the bundle is not pruned).
- ``int8_pruned_tflite``: the bundle's ``backbone.tflite`` when the bundle is pruned (sparsity > 5%).

TensorFlow is imported only for what needs it (Keras variants, conversions, the ODT and Keras alternatives).
"""
from __future__ import annotations

import gzip
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from metalite.training.datasets import HELDOUT_SPLIT

from . import bench_latency as lat

HERE = Path(__file__).resolve().parent
VARIANTS = ("float_keras", "float_tflite", "pruned_float_tflite", "int8_tflite", "int8_pruned_tflite")
LABELS = {"float_keras": "float Keras", "float_tflite": "float TFLite", "pruned_float_tflite": "pruned float TFLite",
          "int8_tflite": "int8 TFLite", "int8_pruned_tflite": "int8 + pruned TFLite"}
PRUNED_SPARSITY = 0.05

FULL = {"episodes": 600, "configs": [(5, 1), (5, 5), (20, 1), (20, 5)], "within": True,
        "warmup": 10, "runs": 50, "keras_runs": 20, "adapt_tasks": 10, "build_tflite_venv": True}
QUICK = {"episodes": 100, "configs": [(5, 1), (20, 1)], "within": True,
         "warmup": 3, "runs": 10, "keras_runs": 5, "adapt_tasks": 3, "build_tflite_venv": False}


def _say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist):
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def blas_info() -> dict:
    """BLAS library and kernel numpy uses (threadpoolctl if installed, else numpy's build config)."""
    info = {"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "threadpoolctl": _version("threadpoolctl")}
    try:
        from threadpoolctl import threadpool_info

        info["libraries"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                                    "threading_layer")} for d in threadpool_info()]
    except ImportError:
        info["libraries"] = None
        info["note"] = "threadpoolctl not installed: kernel not detected (pip install threadpoolctl)"
        try:
            cfg = np.show_config(mode="dicts")
            blas = cfg.get("Build Dependencies", {}).get("blas", {})
            info["numpy_build_blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration")}
        except Exception:
            pass
    return info


def machine_info() -> dict:
    return {
        "cpu": _cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "os": platform.platform(), "python": platform.python_version(),
        "libraries": {d: _version(d) for d in ("numpy", "ai-edge-litert", "tflite-runtime", "tensorflow",
                                               "tensorflow-cpu", "tf-keras", "tensorflow-model-optimization",
                                               "matplotlib", "metalite")},
        "interpreter": os.environ.get("METALITE_TFLITE") or "auto",
        "blas": blas_info(),
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                "METALITE_TFLITE", "TF_ENABLE_ONEDNN_OPTS") if os.environ.get(k)},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# ----------------------------------------------------------------------------- data
def load_heldout(spec: str, size: int):
    """The held-out test classes of ``spec`` (``datasets.HELDOUT_SPLIT``), as every measurement uses."""
    from metalite.training.datasets import load_data

    return load_data(spec, size, HELDOUT_SPLIT)


def bench_data(manifest: dict, data_spec: str | None) -> str:
    """The data to benchmark on: ``data_spec``, else the bundle's training data if it is the built-in glyphs
    (a manifest records file names only, never where they are: ``datasets.portable_spec``)."""
    from metalite.training.datasets import DataError, parse_spec

    if data_spec:
        parse_spec(data_spec)
        return data_spec
    recorded = (manifest.get("training") or {}).get("data") or "glyphs"
    if recorded.strip() != "glyphs":
        raise DataError(f"the bundle was trained on {recorded}; pass --data with where those files are on this machine")
    return recorded


# ----------------------------------------------------------------------------- variants
class Variant:
    def __init__(self, key, path=None, keras=None, source=""):
        self.key, self.path, self.keras, self.source = key, path, keras, source

    def as_dict(self):
        return {"label": LABELS[self.key], "file": str(self.path) if self.path else None, "source": self.source}


def _bundle_is_pruned(manifest) -> bool:
    comp = manifest.get("compression") or {}
    sp = comp.get("sparsity") or (manifest.get("backbone") or {}).get("weight_sparsity") or 0.0
    return float(sp) > PRUNED_SPARSITY or comp.get("stage") in ("pruned", "pqat")


def find_variants(bundle, model_dirs, vdir: Path, data_spec: str) -> tuple:
    """({key: Variant}, {key: why missing}); converted variants are written to ``vdir``."""
    found, missing = {}, {}
    m = bundle.manifest
    pruned = _bundle_is_pruned(m)
    found["int8_pruned_tflite" if pruned else "int8_tflite"] = Variant(
        "int8_pruned_tflite" if pruned else "int8_tflite", bundle.backbone_path, source="bundle backbone.tflite")
    ffile = (m.get("backbone") or {}).get("float_file")
    if ffile and (bundle.root / ffile).is_file():
        if pruned:  # export --float of a compressed model dir: the pruned (and QAT-trained) weights in float32
            found["pruned_float_tflite"] = Variant("pruned_float_tflite", bundle.root / ffile,
                                                   source=f"bundle {ffile} (float export of the compressed model)")
        else:
            found["float_tflite"] = Variant("float_tflite", bundle.root / ffile, source=f"bundle {ffile}")
    keras_float, keras_pruned = None, None
    for md in model_dirs or []:
        try:
            from metalite.training.modeldir import load_model_dir

            cfg, backbone, _ = load_model_dir(md)
        except Exception as e:  # noqa: BLE001 - reported, the rest of the bench goes on
            missing.setdefault("float_keras", f"--model {md}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        stage = cfg.get("stage", "float")
        if stage == "float":
            keras_float = (md, backbone)
        elif stage == "pruned":
            keras_pruned = (md, backbone)
        elif "pruned_float_tflite" in found:
            continue
        else:
            missing.setdefault("pruned_float_tflite", f"--model {md} is stage {stage!r}; a float pruned "
                                                      "model needs a stage 'pruned' model directory")
    if keras_float:
        found["float_keras"] = Variant("float_keras", None, keras_float[1], source=f"model dir {keras_float[0]}")
    else:
        missing.setdefault("float_keras", "no float model directory: pass --model MODEL_DIR (needs TensorFlow)")
    vdir.mkdir(parents=True, exist_ok=True)
    if "float_tflite" not in found:
        if keras_float:
            from metalite.export.tflite import convert_float

            p = vdir / "float.tflite"
            p.write_bytes(convert_float(keras_float[1]))
            found["float_tflite"] = Variant("float_tflite", p, source=f"converted from {keras_float[0]}")
        else:
            missing["float_tflite"] = "bundle has no backbone_float.tflite and no float model dir (--model) to convert"
    if keras_pruned and "pruned_float_tflite" not in found:
        from metalite.export.tflite import convert_float

        model = keras_pruned[1]
        try:
            import tensorflow_model_optimization as tfmot

            model = tfmot.sparsity.keras.strip_pruning(model)
        except Exception:
            pass
        p = vdir / "pruned_float.tflite"
        p.write_bytes(convert_float(model))
        found["pruned_float_tflite"] = Variant("pruned_float_tflite", p, source=f"converted from {keras_pruned[0]}")
    elif "pruned_float_tflite" not in missing:
        missing["pruned_float_tflite"] = ("no pruned model directory (--model DIR of stage 'pruned')" if pruned
                                          else "bundle is not pruned")
    if pruned and "int8_tflite" not in found:
        if keras_float:
            from metalite.export.tflite import convert_int8
            from metalite.training.datasets import load_data, representative_inputs

            size = int(bundle.input_shape[0])
            rep = representative_inputs(load_data(data_spec, size, "train"), 200)
            p = vdir / "int8.tflite"
            p.write_bytes(convert_int8(keras_float[1], rep, batch=None))
            found["int8_tflite"] = Variant("int8_tflite", p, source=f"post-training int8 of {keras_float[0]} "
                                                                    "(200 training images)")
        else:
            missing["int8_tflite"] = "no float model dir (--model) to quantize without pruning"
    if not pruned:
        missing["int8_pruned_tflite"] = "bundle is not pruned (its backbone is reported as int8_tflite)"
    order = {k: i for i, k in enumerate(VARIANTS)}
    return dict(sorted(found.items(), key=lambda kv: order[kv[0]])), missing


def _tflite_embed_fn(path, threads=2):
    from metalite.runtime.embedder import Embedder
    from metalite.runtime.interpreter import get_backend, make_interpreter

    emb = Embedder(make_interpreter(path, threads, None, get_backend()), max_batch=64, name=Path(path).name)
    return emb


# ----------------------------------------------------------------------------- accuracy
def accuracy_section(variants, data, spec, cfg, seed=0, say=_say) -> dict:
    from metalite.training.datasets import DataError
    from metalite.training.evaluate import embed_all, evaluate_embeddings, keras_embed_fn

    is_omniglot = data.spec.startswith("omniglot")
    settings = [(w, s, False) for w, s in cfg["configs"]]
    groups = sorted(set(data.groups))
    notes = []
    if is_omniglot and cfg["within"]:
        if len(groups) > 1:
            settings += [(w, s, True) for w, s in cfg["configs"]]
        else:
            notes.append(f"all held-out classes are from one alphabet ({groups[0]}): the unstructured episodes "
                         "are within-alphabet episodes, so no separate within-alphabet rows")
    sec = {"notes": notes, "groups": len(groups),"data": data.spec, "split": HELDOUT_SPLIT, "classes": data.num_classes,
           "images": int(len(data.images)), "episodes": cfg["episodes"], "queries": 15, "seed": seed,
           "adaptation": "runtime.head.adapt with the bundle's head and settings (embeddings computed once per variant)",
           "results": {}, "skipped": {}}
    for key, v in variants.items():
        say(f"accuracy: embedding {len(data.images)} images with {LABELS[key]}")
        fn = keras_embed_fn(v.keras) if v.keras is not None else _tflite_embed_fn(v.path)
        emb = embed_all(fn, data, batch=64)
        res = {}
        for ways, shots, within in settings:
            name = f"{ways}way{shots}shot" + ("_within" if within else "")
            queries = min(15, int(data.counts().max()) - shots)
            try:
                r = evaluate_embeddings(emb, data, spec, ways, shots, queries=queries, episodes=cfg["episodes"],
                                        seed=seed, within_group=within)
            except DataError as e:
                sec["skipped"][name] = str(e)
                continue
            res[name] = r
        sec["results"][key] = res
    return sec


# ----------------------------------------------------------------------------- size
def size_section(variants, bundle) -> dict:
    from metalite.export.inspect import weight_stats

    out = {}
    for key, v in variants.items():
        if v.path is not None:
            raw = Path(v.path).read_bytes()
            ws = weight_stats(raw, Path(v.path).name)
            out[key] = {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 9, mtime=0)),
                        "parameters": int(ws["weights"]), "sparsity": float(ws["sparsity"]),
                        "what": f"{Path(v.path).name} (conv/dense weights counted as parameters)"}
        else:
            import tempfile

            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "backbone.weights.h5"
                v.keras.save_weights(str(p))
                raw = p.read_bytes()
            ws = [w.numpy() for w in v.keras.weights]
            kern = [w for w in ws if w.ndim >= 2]
            zeros = sum(int((w == 0).sum()) for w in kern)
            total = sum(w.size for w in kern)
            out[key] = {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 9, mtime=0)),
                        "parameters": int(v.keras.count_params()), "sparsity": zeros / total if total else 0.0,
                        "what": "tf_keras backbone.weights.h5 (all parameters incl. BatchNorm)"}
    head = Path(bundle.head_path).read_bytes()
    out["head.npz"] = {"bytes": len(head), "gzip_bytes": len(gzip.compress(head, 9, mtime=0))}
    return out


# ----------------------------------------------------------------------------- latency
def find_tflite_runtime_python(build: bool, say=_say):
    """(python of a venv with tflite-runtime, note): ``runtime_env.tflite_runtime_python``."""
    from .runtime_env import tflite_runtime_python

    return tflite_runtime_python(build, say)


def keras_latency(model, cfg, input_shape) -> dict:
    from metalite.export.tfcompat import tf

    rng = np.random.default_rng(0)
    res = {}
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    for b in (1, 32):
        x = rng.random((b, *input_shape), dtype=np.float32)
        xt = tf.constant(x)
        res[f"predict_b{b}"] = {**lat.stats(lat.time_calls(lambda: model.predict(x, batch_size=b, verbose=0),
                                                          min(cfg["warmup"], 3), cfg["keras_runs"]), per=b),
                                "batch": b, "call": "model.predict"}
        res[f"direct_b{b}"] = {**lat.stats(lat.time_calls(lambda: model(xt, training=False).numpy(),
                                                         min(cfg["warmup"], 3), cfg["runs"]), per=b),
                               "batch": b, "call": "model(x, training=False) (eager)"}
        res[f"tffunction_b{b}"] = {**lat.stats(lat.time_calls(lambda: fn(xt).numpy(), cfg["warmup"], cfg["runs"]),
                                               per=b), "batch": b, "call": "tf.function(model)(x)"}
    return res


def _serve_worker(python, backend, site, stderr_file):
    """A ``bench_latency.py --serve`` process for ``backend`` importing this metalite.runtime from ``site``."""
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="2")
    with open(stderr_file, "w") as err:
        return subprocess.Popen([python, str(HERE / "bench_latency.py"), "--serve", "--backend", backend],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                env=env, cwd=str(site))


def latency_section(variants, cfg, threads=(1, 2), say=_say, tmp=None) -> dict:
    """Every TFLite variant on ai-edge-litert and tflite-runtime, interleaved round by round (one worker
    process per interpreter, each opening models as metalite.runtime does), then float Keras."""
    rounds = int(cfg.get("rounds", 5))
    calls = max(3, int(cfg["runs"]) // rounds)
    sec = {"unit": "ms per image (median of repeated calls after warm-up; IQR = q3 - q1)",
           "warmup": cfg["warmup"], "runs": calls * rounds, "rounds": rounds,
           "order": "interleaved: each round times every variant and cell on each interpreter in turn (order "
                    "alternating between rounds); ratios are per round", "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
           "interpreters": {}, "tflite": {}, "ratios": {}, "keras": None}
    try:
        import ai_edge_litert  # noqa: F401

        sec["interpreters"]["ai_edge_litert"] = {"status": "subprocess", "python": sys.executable,
                                                 "version": _version("ai-edge-litert")}
    except ImportError:
        sec["interpreters"]["ai_edge_litert"] = {"status": "not installed"}
    py, note = find_tflite_runtime_python(cfg["build_tflite_venv"], say)
    sec["interpreters"]["tflite_runtime"] = ({"status": "subprocess", "python": py, "where": note} if py
                                             else {"status": note})
    pythons = {be: info["python"] for be, info in sec["interpreters"].items() if info.get("python")}
    models = {k: v.path for k, v in variants.items() if v.path is not None}
    import tempfile

    from .runtime_env import runtime_site

    with tempfile.TemporaryDirectory(dir=tmp) as td:
        site = runtime_site(Path(td))
        workers = {be: _serve_worker(p, be, site, Path(td) / f"{be}.err") for be, p in pythons.items()}
        try:
            say(f"latency: {len(models)} variants x {', '.join(workers)}, {rounds} interleaved rounds")
            got = lat.interleaved(workers, models, [(b, t) for t in threads for b in (1, 32)], rounds, calls,
                                  int(cfg["warmup"]), say)
        finally:
            for w in workers.values():
                w.stdin.close()
                w.wait(timeout=60)
        errs = {be: ((Path(td) / f"{be}.err").read_text().strip().splitlines() or [""])[-1][:300] for be in workers}
    for key, per in got["results"].items():
        sec["tflite"][key] = {}
        for be, cells in per.items():
            if "error" in cells and errs.get(be):
                cells["error"] += f" (worker: {errs[be]})"
            how = cells.pop("how", None) if "error" not in cells else None
            sec["tflite"][key][be] = cells
            if how:
                sec["interpreters"][be].setdefault("how", {})[key] = how
    sec["ratios"] = got["ratios"]
    for be, info in got["workers"].items():
        sec["interpreters"][be].update(info)
    if "float_keras" in variants:
        say("latency: float Keras (desktop reference)")
        from metalite.export.tfcompat import tf

        sec["keras"] = {"threads": "TensorFlow default (intra-op = all cores)", "tensorflow": tf.__version__,
                        "results": keras_latency(variants["float_keras"].keras, cfg,
                                                 tuple(variants["float_keras"].keras.inputs[0].shape[1:]))}
    else:
        sec["keras"] = {"skipped": "no float Keras model (--model)"}
    return sec


# ----------------------------------------------------------------------------- memory
MEMORY_SCRIPT = r"""
import json, sys, time


def hwm_kib():
    # VmHWM: peak resident set of this process since exec (ru_maxrss may carry the forking parent's peak)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


import numpy as np
base = hwm_kib()
bundle, n_img = sys.argv[1], int(sys.argv[2])
from metalite.runtime import FewShotClassifier
t = time.perf_counter()
clf = FewShotClassifier(bundle, num_threads=1, delegate="cpu")
after_load = hwm_kib()
h, w, _ = clf.bundle.input_shape
rng = np.random.default_rng(0)
imgs = rng.integers(0, 256, size=(n_img, h, w), dtype=np.uint8)
labels = [i % 20 for i in range(n_img)]
clf.fit(imgs[:100], labels[:100])
pred = clf.predict(imgs)
print(json.dumps({"baseline_kib": base, "after_load_kib": after_load, "peak_kib": hwm_kib(), "backend": clf.backend,
                  "tensorflow_imported": "tensorflow" in sys.modules, "numpy": np.__version__,
                  "seconds": time.perf_counter() - t, "predicted": len(pred)}))
"""

# A small launcher process runs the measured child, so the child's ru_maxrss starts from the launcher's
# few MiB at fork time, not from the benchmark's own (TensorFlow-sized) resident set.
LAUNCHER = r"""
import json, resource, subprocess, sys
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
if p.returncode:
    sys.stderr.write(p.stderr)
    sys.exit(p.returncode)
print(json.dumps({"ru_maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "child": json.loads(p.stdout.strip().splitlines()[-1])}))
"""


def _child_rss(python, args, env, cwd) -> tuple:
    """(ru_maxrss KiB of the child running ``args``, its JSON report), measured through LAUNCHER."""
    p = subprocess.run([python, "-c", LAUNCHER, python, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, text=True, timeout=600, cwd=str(cwd))
    if p.returncode != 0:
        raise RuntimeError((p.stderr.strip().splitlines() or ["?"])[-1][:300])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return int(r["ru_maxrss_kib"]), r["child"]


def memory_section(bundle_path, tmp: Path, tflite_python=None, images: int = 200) -> dict:
    """Peak RSS (ru_maxrss) of a runtime-only child process: load the bundle, adapt 20-way 5-shot, predict."""
    from .runtime_env import runtime_site

    site = runtime_site(Path(tmp).resolve())
    sec = {"what": f"child process importing only metalite.runtime (a copy of this one on PYTHONPATH): load the "
                   f"bundle, fit 100 images (20 classes x 5), predict {images} images, 1 thread",
           "unit": "MiB", "runs": {}}
    runs = [("ai_edge_litert", sys.executable)]
    if tflite_python:
        runs.append(("tflite_runtime", tflite_python))
    for backend, py in runs:
        env = dict(os.environ, PYTHONPATH=str(site), METALITE_TFLITE=backend, PYTHONNOUSERSITE="1")
        try:
            peak, r = _child_rss(py, ["-c", MEMORY_SCRIPT, str(Path(bundle_path).resolve()), str(images)], env, site)
            sec["runs"][backend] = {"peak_rss_mib": peak / 1024, "vmhwm_mib": r["peak_kib"] / 1024,
                                    "python_numpy_baseline_mib": r["baseline_kib"] / 1024,
                                    "after_load_mib": r["after_load_kib"] / 1024, "numpy": r["numpy"],
                                    "tensorflow_imported": r["tensorflow_imported"], "seconds": r["seconds"],
                                    "python": py}
        except Exception as e:  # noqa: BLE001
            sec["runs"][backend] = {"error": str(e)}
    return sec


# ----------------------------------------------------------------------------- orchestration
def run_bench(bundle_path, out, quick: bool = False, model_dirs=(), data_spec: str | None = None,
              threads=(1, 2), seed: int = 0, say=_say) -> dict:
    from metalite.runtime import head as headlib
    from metalite.runtime.bundle import open_bundle

    from . import bench_adapt, bench_report

    t_start = time.perf_counter()
    cfg = dict(QUICK if quick else FULL)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = open_bundle(bundle_path)
    spec = headlib.load_head(bundle.head_path)
    data_spec = bench_data(bundle.manifest, data_spec)
    report = {"format": "metalite-bench", "format_version": 1, "mode": "quick" if quick else "full",
              "bundle": {"path": str(bundle_path), "manifest_sha256": bundle.manifest_sha256,
                         "training": bundle.manifest.get("training"), "compression": bundle.manifest.get("compression")},
              "machine": machine_info(), "settings": {k: v for k, v in cfg.items()}}
    say(f"variants ({'quick' if quick else 'full'} run)")
    variants, missing = find_variants(bundle, list(model_dirs), out / "variants", data_spec)
    report["variants"] = {"available": {k: v.as_dict() for k, v in variants.items()}, "missing": missing}
    say(f"held-out data {data_spec} ({HELDOUT_SPLIT})")
    data = load_heldout(data_spec, int(bundle.input_shape[0]))
    report["accuracy"] = accuracy_section(variants, data, spec, cfg, seed, say)
    report["size"] = size_section(variants, bundle)
    report["latency"] = latency_section(variants, cfg, threads, say, tmp=out / "variants")
    tfl_py = report["latency"]["interpreters"]["tflite_runtime"].get("python")
    say("adaptation")
    report["adaptation"] = bench_adapt.run_adaptation(
        bundle_path, data, tasks=cfg["adapt_tasks"], threads=max(threads),
        keras_backbone=variants["float_keras"].keras if "float_keras" in variants else None, seed=seed, say=say)
    say("memory")
    report["memory"] = memory_section(bundle_path, out / "variants", tfl_py)
    report["headline"] = bench_report.headline(report)
    report["elapsed_s"] = time.perf_counter() - t_start
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_jsonable))
    plots = bench_report.plots(report, out)
    (out / "report.md").write_text(bench_report.markdown(report, plots))
    say(f"wrote {out / 'report.json'}, {out / 'report.md'} and {len(plots)} plots in {report['elapsed_s']:.0f} s")
    return report


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)
