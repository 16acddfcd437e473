"""Run on the (emulated) device: load a bundle, adapt, predict, save/load, through the public API.

Plain python; imports only the standard library, numpy and metalite.runtime (and the CLI it is told to
run), so it runs unchanged in the runtime-only venvs and in the arm64 Debian rootfs.

    python device_run.py --bundle B --task TASK.npz --out OUT [--threads N] [--delegate cpu]
                         [--cli-task DIR]   # also `metalite adapt` / `metalite predict --json`

Writes OUT/result.json (labels, timings, peak memory, interpreter, TF check, state format, CLI output),
OUT/result.npz (probabilities and embeddings of the query images) and, unless --skip-extras, OUT/state.npz
(the saved state).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings


def peak_rss_mb():
    """Peak resident set size of this process: VmHWM (Linux), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def vm_peak_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def tf_check():
    import importlib.util

    return {
        "tensorflow_importable": importlib.util.find_spec("tensorflow") is not None,
        "tf_modules_loaded": sorted(
            m
            for m in sys.modules
            if m == "tensorflow"
            or m.startswith("tensorflow.")
            or m == "keras"
            or m.startswith("keras.")
            or m == "tf_keras"
        ),
    }


def run_cli(argv, env=None):
    exe = os.path.join(os.path.dirname(sys.executable), "metalite")
    t = time.perf_counter()
    p = subprocess.run([exe] + argv, capture_output=True, text=True, env=env)
    return {
        "argv": argv,
        "returncode": p.returncode,
        "stdout": p.stdout,
        "stderr": p.stderr,
        "seconds": time.perf_counter() - t,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--delegate", default="cpu")
    ap.add_argument(
        "--cli-task", default=None, help="task folder (support/, query/) for the CLI round"
    )
    ap.add_argument(
        "--skip-extras", action="store_true", help="only fit + predict (memory profiles)"
    )
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    res = {"python": sys.version.split()[0], "machine": platform.machine(), "argv": sys.argv[1:]}
    t_start = time.perf_counter()

    import numpy as np

    res["numpy"] = np.__version__
    t = time.perf_counter()
    import metalite.runtime as rt
    from metalite.runtime import FewShotClassifier

    res["import_seconds"] = time.perf_counter() - t
    task = np.load(a.task)
    sx, sy = task["support_images"], [str(s) for s in task["support_labels"]]
    qx, qy = task["query_images"], [str(s) for s in task["query_labels"]]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        clf = FewShotClassifier(a.bundle, num_threads=a.threads, delegate=a.delegate)
        res["open_seconds"] = time.perf_counter() - t
    res["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
    res["backend"], res["device"] = clf.backend, clf.device
    res["acceleration"] = clf.acceleration.as_dict()
    try:
        import importlib

        mod = importlib.import_module(clf.backend if clf.backend != "tensorflow" else "tensorflow")
        res["backend_version"] = getattr(mod, "__version__", None)
    except Exception as e:  # informative only
        res["backend_version"] = repr(e)

    # Timing: one warm-up image, then every query image embedded once (the cache doesn't help: new images).
    clf.embed(qx[:1])
    t = time.perf_counter()
    emb = clf.embed(qx)
    res["embed_seconds"] = time.perf_counter() - t
    res["ms_per_image"] = 1000.0 * res["embed_seconds"] / len(qx)

    t = time.perf_counter()
    clf.fit(sx, sy)
    res["fit_seconds"] = time.perf_counter() - t
    res["classes"] = clf.classes
    proba = clf.predict_proba(qx)
    pred = clf.predict(qx)
    assert proba.shape == (len(qx), len(set(sy))) and proba.dtype == np.float32, (
        proba.shape,
        proba.dtype,
    )
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-4)
    assert pred == [clf.classes[i] for i in proba.argmax(axis=1)]
    res["pred"] = pred
    res["accuracy"] = float(np.mean([p == y for p, y in zip(pred, qy)]))

    if not a.skip_extras:
        # remove_class / add_class: the remaining classes are the same, the re-added one comes last.
        gone = clf.classes[0]
        clf.remove_class(gone)
        assert gone not in clf.classes and len(clf.classes) == len(res["classes"]) - 1
        p2 = clf.predict(qx)
        assert gone not in p2
        clf.add_class(gone, sx[[i for i, y in enumerate(sy) if y == gone]])
        assert clf.classes == res["classes"][1:] + [gone]
        p3 = clf.predict(qx)
        res["add_remove_pred_same"] = float(np.mean([x == y for x, y in zip(p3, pred)]))

        # save -> load: the restored classifier predicts exactly as the saved one.
        state = os.path.join(a.out, "state.npz")
        clf.fit(sx, sy)
        clf.save(state)
        clf2 = FewShotClassifier.load(a.bundle, state, num_threads=a.threads, delegate=a.delegate)
        assert clf2.classes == clf.classes
        assert np.array_equal(clf2.predict_proba(qx), proba), "loaded state predicts differently"
        res["state_roundtrip"] = True
        # the support pixels travel with the state (format 2 gray, 3 RGB), so another backbone can re-embed them
        kept, back = clf.support_images(), clf2.support_images()
        res["state_images_kept"] = all(np.array_equal(kept[c], back[c]) for c in clf.classes)
        with np.load(state) as z:
            res["state_format_version"] = json.loads(str(z["meta"]))["format_version"]

    res["peak_rss_mb"] = peak_rss_mb()
    res["vm_peak_mb"] = vm_peak_mb()
    res["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    res["tf"] = tf_check()
    res["runtime_file"] = rt.__file__

    if a.cli_task:
        st = os.path.join(a.out, "cli_state.npz")
        adapt = run_cli(["adapt", a.bundle, os.path.join(a.cli_task, "support"), "--out", st])
        paths = [os.path.join(a.cli_task, str(p)) for p in task["query_paths"]]
        predict = run_cli(["predict", a.bundle, "--state", st] + paths + ["--json"])
        verbose = run_cli(["predict", a.bundle, "--state", st, paths[0], "--verbose"])
        # the API on the same files (decoded by Pillow, like the CLI does)
        res["api_pred_from_files"] = (
            FewShotClassifier.load(
                a.bundle, st, num_threads=a.threads, delegate=a.delegate
            ).predict(paths)
            if adapt["returncode"] == 0 and os.path.exists(st)
            else None
        )
        res["cli"] = {"adapt": adapt, "predict": predict, "verbose": verbose, "paths": paths}

    res["total_seconds"] = time.perf_counter() - t_start
    np.savez(os.path.join(a.out, "result.npz"), proba=proba, embeddings=emb)
    with open(os.path.join(a.out, "result.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(
        json.dumps(
            {
                k: res[k]
                for k in ("machine", "backend", "device", "ms_per_image", "peak_rss_mb", "accuracy")
            }
        )
    )


if __name__ == "__main__":
    main()
