"""Issue 12's hostile-user drills against the device runtime; prints the drill table of docs/hardening.md.

    python scripts/hardening_drills.py                       # this checkout's metalite (the active python)
    python scripts/hardening_drills.py --before OLD/python   # also run them on another install, for comparison
    python scripts/hardening_drills.py --only huge-png,10k-classes

Every drill runs in a fresh child process of the chosen interpreter (so peak RSS is that drill's own),
on a private copy of the shipped bundle models/omniglot, and reports what it observed. Needs numpy,
Pillow and a TFLite interpreter; about 2-4 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Code shared by every child: a bundle copy, bar images, a fitted state, RSS readers.
PRELUDE = r"""
import json, os, shutil, sys, time, resource
import numpy as np
from pathlib import Path
W = Path(sys.argv[1])
def bar(k, size=28):
    a = np.full((size, size), 255, np.uint8); t = 2 + 6 * k; a[t:t + 4, 3:25] = 0; return a
def bundle_copy(name):
    d = W / name
    if not d.exists():
        shutil.copytree(sys.argv[2], d)
    return d
def rehash(d):
    import hashlib
    m = json.loads((d / "manifest.json").read_text())
    for n in m["files"]:
        m["files"][n] = {"sha256": hashlib.sha256((d / n).read_bytes()).hexdigest(), "bytes": (d / n).stat().st_size}
    (d / "manifest.json").write_text(json.dumps(m))
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
def err(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
from metalite.runtime import FewShotClassifier
OUT = {}
"""


def child(python: str, work: Path, code: str, timeout: int = 600, env: dict | None = None) -> dict:
    """Run PRELUDE + ``code`` (which fills the dict OUT) in a fresh process; its JSON, or what went wrong."""
    src = PRELUDE + textwrap.dedent(code) + "\nprint('@@' + json.dumps(OUT))\n"
    try:
        p = subprocess.run(
            [python, "-c", src, str(work), str(REPO / "models" / "omniglot")],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            cwd=str(work),
        )
    except subprocess.TimeoutExpired:
        return {"crash": f"still running after {timeout} s (killed)"}
    lines = [l for l in p.stdout.splitlines() if l.startswith("@@")]
    if lines:
        return json.loads(lines[-1][2:])
    tail = [l for l in p.stderr.strip().splitlines() if l.strip()]
    return {
        "crash": f"exit {p.returncode}, traceback ending {tail[-1][:200] if tail else '(nothing)'}"
    }


def cli(python: str, work: Path, args: list, env: dict | None = None) -> dict:
    """Run ``metalite predict/adapt`` (runtime CLI) in a child; exit code, output lines and its peak RSS."""
    wrapper = (
        "import resource, subprocess, sys, json\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps({'exit': p.returncode, 'stdout': p.stdout, 'stderr': p.stderr,\n"
        "  'peak_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    p = subprocess.run(
        [python, "-c", wrapper, python, "-m", "metalite.tools.cli_runtime", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=str(work),
        env={**os.environ, **(env or {})},
    )
    r = json.loads(p.stdout)
    r["stderr"] = [l for l in r["stderr"].splitlines() if l.strip() and "XNNPACK" not in l]
    return r


# ----------------------------------------------------------------------------- the drills
def d_transparent_ink(py, w):
    r = child(
        py,
        w,
        """
        from PIL import Image
        clf = FewShotClassifier(bundle_copy("b"), delegate="cpu").fit(np.stack([bar(k) for k in range(3)]), ["bar0", "bar1", "bar2"])
        paths = []
        for k in range(3):
            rgba = np.zeros((28, 28, 4), np.uint8); rgba[..., 3] = 255 - bar(k)
            paths.append(str(W / f"ink{k}.png")); Image.fromarray(rgba, "RGBA").save(paths[-1])
        p = clf.predict_proba(paths)
        OUT["labels"] = [clf.classes[i] for i in p.argmax(1)]
        OUT["conf"] = [round(float(x), 3) for x in p.max(1)]
    """,
    )
    if "crash" in r:
        return r["crash"]
    right = sum(l == f"bar{k}" for k, l in enumerate(r["labels"]))
    return f"{right}/3 right: {' '.join(r['labels'])} (confidence {', '.join(map(str, r['conf']))})"


def d_16bit(py, w):
    r = child(
        py,
        w,
        """
        from PIL import Image
        from metalite.runtime.images import as_model_input
        img = np.minimum(bar(1), np.linspace(40, 255, 28).astype(np.uint8)[None])  # a bar on a gray ramp
        Image.fromarray(img.astype(np.uint16) * 257).save(W / "g16.png")
        a = as_model_input(img, (28, 28, 1)); b = as_model_input(str(W / "g16.png"), (28, 28, 1))
        c = as_model_input(img.astype(np.uint16) * 257, (28, 28, 1))
        OUT["png"] = float(np.abs(a - b).max()); OUT["array"] = float(np.abs(a - c).max())
    """,
    )
    return (
        r.get("crash")
        or f"max |model input - 8-bit's|: 16-bit PNG {r['png']:.3g}, uint16 array {r['array']:.3g}"
    )


def _state(py, w):
    if not (w / "state.npz").exists():
        r = child(
            py,
            w,
            """
            from PIL import Image
            for k in range(3):
                d = W / "support" / f"bar{k}"; d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(bar(k)).save(d / "0.png"); Image.fromarray(bar(k)).save(W / f"q{k}.png")
            FewShotClassifier(bundle_copy("b"), delegate="cpu").fit({f"bar{k}": [bar(k)] for k in range(3)}).save(W / "state.npz")
        """,
        )
        assert "crash" not in r, r
    return ["predict", w / "b", "--state", w / "state.npz", "--delegate", "cpu"]


def _blank_png(path: Path, width: int, height: int) -> None:
    import struct
    import zlib

    comp, row = zlib.compressobj(9), b"\x00" + b"\xff" * width
    with open(path, "wb") as f:

        def chunk(kind, data):
            f.write(
                struct.pack(">I", len(data))
                + kind
                + data
                + struct.pack(">I", zlib.crc32(kind + data))
            )

        f.write(b"\x89PNG\r\n\x1a\n")
        chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        chunk(b"IDAT", b"".join(comp.compress(row) for _ in range(height)) + comp.flush())
        chunk(b"IEND", b"")


def d_huge_png(py, w):
    _blank_png(w / "huge.png", 13000, 13000)
    r = cli(py, w, [*_state(py, w), w / "huge.png"])
    msg = (r["stderr"] or [r["stdout"].strip()])[0][:150]
    return f"exit {r['exit']}, peak RSS {r['peak_mib']:.0f} MiB ({(w / 'huge.png').stat().st_size // 1024} KiB file): {msg}"


def d_huge_png_allowed(py, w):
    if not (w / "huge.png").exists():
        _blank_png(w / "huge.png", 13000, 13000)
    r = cli(py, w, [*_state(py, w), w / "huge.png"], env={"METALITE_MAX_IMAGE_PIXELS": "200000000"})
    return f"exit {r['exit']}, peak RSS {r['peak_mib']:.0f} MiB: {(r['stdout'].strip() or r['stderr'][:1])}"


def d_at_budget(py, w):
    r = child(
        py,
        w,
        """
        from PIL import Image
        rgba = np.zeros((4096, 4096, 4), np.uint8); rgba[1000:3000, 500:3500, 3] = 255
        Image.fromarray(rgba, "RGBA").save(W / "budget.png"); del rgba
        photo = np.full((6000, 8000, 3), 255, np.uint8); photo[2000:4000, 1000:7000] = 0
        Image.fromarray(photo).save(W / "photo.jpg", quality=90); del photo
    """,
    )
    if "crash" in r:
        return r["crash"]
    out = []
    for name in ("budget.png", "photo.jpg"):
        r = cli(py, w, [*_state(py, w), w / name])
        out.append(f"{name}: exit {r['exit']}, peak RSS {r['peak_mib']:.0f} MiB")
    base = cli(py, w, [*_state(py, w), w / "q0.png"])
    return "; ".join(out) + f" (a 28x28 PNG: {base['peak_mib']:.0f} MiB)"


def d_batch_with_bad_file(py, w):
    (w / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    st = _state(py, w)
    r = cli(py, w, [*st, w / "q0.png", w / "corrupt.png", w / "missing.png", w / "q2.png"])
    rows = [l.split("\t")[1] for l in r["stdout"].splitlines() if "\t" in l]
    j = cli(py, w, [*st, "--json", w / "q0.png", w / "corrupt.png", w / "q2.png"])
    try:
        js = json.loads(j["stdout"])
        jtxt = f"--json: {len(js)} rows, {sum(bool(x.get('error')) for x in js)} with an error"
    except ValueError:
        jtxt = "--json: no JSON output"
    return (
        f"exit {r['exit']}, labels printed {rows}, {len(r['stderr'])} stderr lines "
        f"(first: {(r['stderr'] or [''])[0][:90]}); {jtxt}"
    )


def d_zip_extra(py, w):
    import zipfile

    src = REPO / "models" / "omniglot"
    z = w / "extra.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
        for p in src.iterdir():
            f.write(p, f"b/{p.name}")
        f.writestr("b/junk.bin", b"\0" * (200 << 20))
    r = child(
        py,
        w,
        f"""
        os.environ["METALITE_CACHE"] = str(W / "zcache")
        c = FewShotClassifier({str(z)!r}, delegate="cpu")
        files = [p for p in c.bundle.root.rglob("*") if p.is_file()]
        OUT["n"] = len(files); OUT["mib"] = sum(p.stat().st_size for p in files) / 2**20
        OUT["junk"] = any(p.name == "junk.bin" for p in files)
    """,
    )
    return r.get("crash") or (
        f"{z.stat().st_size // 1024} KiB zip -> {r['n']} files, {r['mib']:.1f} MiB unpacked; "
        f"junk.bin {'unpacked' if r['junk'] else 'not unpacked'}"
    )


MANIFEST_EDITS = """[
    lambda m: m.update(input="28x28"), lambda m: m.update(files=["backbone.tflite"]),
    lambda m: m["files"]["head.npz"].update(bytes="many"), lambda m: m["files"]["head.npz"].update(sha256=12),
    lambda m: m["backbone"].update(file=5), lambda m: m["head"].update(file=None),
    lambda m: m["input"].update(preprocess=[1, 2]), lambda m: m["input"]["preprocess"].update(range=[1.0, 0.0]),
    lambda m: m["input"]["quantization"].update(scale=float("nan")),
    lambda m: m["input"]["quantization"].update(zero_point=1e300), lambda m: m["input"].update(shape=[28, True, 1]),
    lambda m: m["output"].update(embedding_dim=True), lambda m: m.update(backbone="backbone.tflite"),
    lambda m: m["files"].update({"a/../../x": m["files"]["head.npz"]}),
]"""


def d_manifests(py, w):
    body = textwrap.dedent("""
        from metalite.runtime import BundleError
        import copy
        base = json.loads((bundle_copy("b") / "manifest.json").read_text())
        texts = []
        for edit in EDITS:
            m = copy.deepcopy(base); edit(m); texts.append(json.dumps(m))
        texts += ["[" * 100000 + "]" * 100000, "null"]
        res = {"one-line BundleError": 0, "loaded": 0}
        for i, t in enumerate(texts):
            d = W / f"m{i}"; shutil.copytree(bundle_copy("b"), d); (d / "manifest.json").write_text(t)
            try:
                FewShotClassifier(d, delegate="cpu"); res["loaded"] += 1
            except BundleError as e:
                res["one-line BundleError"] += "\\n" not in str(e)
            except BaseException as e:
                res[type(e).__name__] = res.get(type(e).__name__, 0) + 1
        OUT.update(res); OUT["n"] = len(texts)
    """)
    r = child(py, w, "EDITS = " + MANIFEST_EDITS + "\n" + body)
    return r.get("crash") or f"{r.pop('n')} manifests: " + ", ".join(
        f"{v} {k}" for k, v in r.items() if v
    )


HEAD_CASES = {
    "NaN weight": ("W0", float("nan")),
    "1e30 bias": ("b0", 1e30),
    "steps -1": ("steps", -1),
    "steps 10**9": ("steps", 10**9),
    "lr NaN": ("lr", float("nan")),
    "lr 1e6": ("lr", 1e6),
}


def d_head_numbers(py, w):
    out = []
    for name, (key, value) in HEAD_CASES.items():
        r = child(
            py,
            w,
            f"""
            from metalite.runtime import BundleError
            key, value = {key!r}, float({str(value)!r})
            d = W / {("h" + key + str(abs(hash(name)) % 1000))!r}; shutil.copytree(bundle_copy("b"), d)
            z = dict(np.load(d / "head.npz")); cfg = json.loads(str(z["config"]))
            if key in ("W0", "b0"):
                z[key] = np.full_like(z[key], value)
            else:
                cfg["adaptation"][key] = int(value) if key == "steps" else value
                if key == "lr":
                    cfg["adaptation"]["steps"] = 50
            z["config"] = np.array(json.dumps(cfg)); np.savez(d / "head.npz", **z); rehash(d)
            try:
                c = FewShotClassifier(d, delegate="cpu").fit(np.stack([bar(k) for k in range(3)]), ["a", "b", "c"])
                p = c.predict_proba(bar(0))
                OUT["r"] = f"loads; predict gives {{'NaN' if np.isnan(p).any() else 'numbers'}}"
            except BundleError as e:
                OUT["r"] = "BundleError at open"
            except Exception as e:
                OUT["r"] = f"{{type(e).__name__}} at fit"
        """,
            timeout=60,
        )
        out.append(f"{name}: {r.get('r') or r['crash']}")
    return "; ".join(out)


def d_state_numbers(py, w):
    _state(py, w)
    r = child(
        py,
        w,
        """
        from metalite.runtime import StateError
        import hashlib
        def digest(arrays):
            h = hashlib.sha256()
            for n in sorted(arrays):
                a = np.ascontiguousarray(arrays[n]); h.update(f"{n}|{a.dtype.str}|{a.shape}|".encode()); h.update(a.tobytes())
            return h.hexdigest()
        z = dict(np.load(W / "state.npz")); meta = json.loads(str(z.pop("meta")))
        cases = {"NaN bias": ("clf_b", lambda a: a * np.nan), "head not chaining": ("clf_W", lambda a: a[:32])}
        for name, (key, f) in cases.items():
            arrays = dict(z); arrays[key] = f(arrays[key]); m = dict(meta, arrays_sha256=digest(arrays))
            np.savez(W / f"bad_{key}.npz", **arrays, meta=np.array(json.dumps(m)))
            try:
                c = FewShotClassifier.load(bundle_copy("b"), W / f"bad_{key}.npz", delegate="cpu")
                p = c.predict_proba(bar(0))
                OUT[name] = f"loaded; predict gives {'NaN' if np.isnan(p).any() else 'numbers'}"
            except StateError as e:
                OUT[name] = "StateError at load"
            except Exception as e:
                OUT[name] = f"loaded; {type(e).__name__} at predict"
    """,
    )
    if "crash" in r:
        return r["crash"]
    j = cli(py, w, ["predict", w / "b", "--state", w / "bad_clf_b.npz", "--json", w / "q0.png"])
    try:
        json.loads(j["stdout"], parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        js = "strict JSON" if j["stdout"].strip() else "no output"
    except ValueError as e:
        js = f"invalid JSON ({e})" if j["stdout"].strip() else "no output"
    return (
        "; ".join(f"{k}: {v}" for k, v in r.items())
        + f"; predict --json on the NaN state: exit {j['exit']}, {js}"
    )


def d_save_targets(py, w):
    _state(py, w)
    r = child(
        py,
        w,
        """
        import stat
        c = FewShotClassifier.load(bundle_copy("b"), W / "state.npz", delegate="cpu")
        real = W / "real.npz"; c.save(real); os.chmod(real, 0o640)
        link = W / "link.npz"; link.symlink_to("real.npz")
        c.save(link)
        OUT["symlink"] = f"link {'kept' if link.is_symlink() else 'replaced by a file'}, target mode {oct(stat.S_IMODE(real.stat().st_mode))}"
        dev = W / "null-clone"
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        try:
            c.save(dev); OUT["device"] = "saved"
        except Exception as e:
            OUT["device"] = err(e)
        OUT["device"] += "; node is " + ("still a character device" if stat.S_ISCHR(os.lstat(dev).st_mode) else "now a regular file")
    """,
    )
    return r.get("crash") or f"{r['symlink']}; device node (a /dev/null clone): {r['device']}"


def d_stale_temps(py, w):
    _state(py, w)
    r = child(
        py,
        w,
        """
        import signal, subprocess
        kill_mid_save = ("import sys, time\\nfrom metalite.common.files import atomic_write\\n"
                         "def write(f):\\n f.write(b'x' * (8 << 20)); f.flush(); print('w', flush=True); time.sleep(60)\\n"
                         "atomic_write(sys.argv[1], write)\\n")
        target = W / "crash" / "state.npz"; target.parent.mkdir()
        c = FewShotClassifier.load(bundle_copy("b"), W / "state.npz", delegate="cpu"); c.save(target)
        for _ in range(5):
            p = subprocess.Popen([sys.executable, "-c", kill_mid_save, str(target)], stdout=subprocess.PIPE, text=True)
            p.stdout.readline(); p.send_signal(signal.SIGKILL); p.wait()
        temps = [q for q in target.parent.iterdir() if q.name != "state.npz"]
        OUT["after_crashes"] = len(temps); OUT["mib"] = sum(q.stat().st_size for q in temps) / 2**20
        old = time.time() - 3600
        for q in temps:
            os.utime(q, (old, old))
        c.save(target)
        OUT["after_next_save"] = len([q for q in target.parent.iterdir() if q.name != "state.npz"])
        OUT["state_ok"] = FewShotClassifier.load(bundle_copy("b"), target, delegate="cpu").classes == c.classes
    """,
    )
    return r.get("crash") or (
        f"5 saves killed mid-write: {r['after_crashes']} temporaries ({r['mib']:.0f} MiB); "
        f"after the next save (temporaries an hour old): {r['after_next_save']}; "
        f"state {'loads' if r['state_ok'] else 'BROKEN'}"
    )


def d_labels(py, w):
    r = child(
        py,
        w,
        """
        c = FewShotClassifier(bundle_copy("b"), delegate="cpu")
        x = np.stack([bar(0), bar(1)])
        for name, labels in {"None": [None, "a"], "1.5": [1.5, "a"], "(1, 2)": [(1, 2), "a"], "True and 1": [True, 1]}.items():
            try:
                c.fit(x, labels)
            except Exception as e:
                OUT[name] = f"{type(e).__name__} at fit"; continue
            try:
                c.save(W / "labels.npz"); OUT[name] = f"fit: {len(c.classes)} classes; saved"
            except Exception as e:
                OUT[name] = f"fit: {len(c.classes)} classes; {type(e).__name__} at save"
    """,
    )
    return r.get("crash") or "; ".join(f"{k}: {v}" for k, v in r.items())


def d_10k(py, w, steps=0):
    r = child(
        py,
        w,
        f"""
        from metalite.runtime import UnknownClassError
        d = bundle_copy("b{steps}")
        if {steps}:
            z = dict(np.load(d / "head.npz")); cfg = json.loads(str(z["config"]))
            cfg["adaptation"].update(steps={steps}, lr=0.1); z["config"] = np.array(json.dumps(cfg))
            np.savez(d / "head.npz", **z); rehash(d)
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=(10000, 28, 28), dtype=np.uint8)
        c = FewShotClassifier(d, delegate="cpu")
        c.embed(x[:2])
        loaded = status("VmRSS"); reset_peak()
        t0 = time.time(); c.fit(x, [f"c{{i:05d}}" for i in range(10000)]); OUT["fit_s"] = time.time() - t0
        c.predict(x[:64]); c.save(W / f"10k{steps}.npz")
        OUT["loaded_mib"] = loaded; OUT["peak_above_mib"] = status("VmHWM") - loaded
        try:
            c.remove_class("nope")
        except UnknownClassError as e:
            OUT["msg_len"] = len(str(e))
    """,
        timeout=900,
    )
    if "crash" in r:
        return r["crash"]
    return (
        f"steps={steps}: peak {r['peak_above_mib']:.0f} MiB above the loaded classifier ({r['loaded_mib']:.0f} MiB); "
        f"fit {r['fit_s']:.1f} s; unknown-class error {r.get('msg_len', '?')} chars"
    )


DRILLS = [
    ("transparent-ink", "black ink on transparent PNGs, 3 classes", "3/3 right", d_transparent_ink),
    (
        "16-bit",
        "16-bit PNG / uint16 array of an 8-bit image",
        "same model input (max diff < 1e-6)",
        d_16bit,
    ),
    (
        "huge-png",
        "metalite predict on a 13000x13000 PNG",
        "refused in one line, peak RSS <= 300 MiB",
        d_huge_png,
    ),
    (
        "huge-png-allowed",
        "the same with METALITE_MAX_IMAGE_PIXELS=2e8",
        "decoded; cost ~2 bytes/pixel",
        d_huge_png_allowed,
    ),
    (
        "at-budget",
        "4096x4096 RGBA PNG (at the budget); 8000x6000 JPEG",
        "decoded, bounded RSS; JPEG drafted",
        d_at_budget,
    ),
    (
        "bad-file-in-batch",
        "predict good, corrupt, missing, good",
        "2 labels, 2 error lines + a count, exit 1; --json too",
        d_batch_with_bad_file,
    ),
    (
        "zip-extra",
        "zip bundle with an unlisted 200 MiB member",
        "only listed files unpacked",
        d_zip_extra,
    ),
    ("manifests", "16 malformed manifests", "16 one-line BundleError", d_manifests),
    (
        "head-numbers",
        "NaN/huge weights, bad steps, NaN lr in head.npz",
        "BundleError at open (lr 1e6: InputError at fit)",
        d_head_numbers,
    ),
    (
        "state-numbers",
        "state with NaN bias / head not chaining (checksums redone)",
        "StateError at load; no NaN JSON",
        d_state_numbers,
    ),
    (
        "save-targets",
        "save through a symlink (target 0640); onto a device node",
        "link kept, mode 0640; device refused",
        d_save_targets,
    ),
    (
        "stale-temps",
        "kill -9 five saves mid-write, then save again",
        "temporaries removed by the next save",
        d_stale_temps,
    ),
    ("labels", "fit with None, 1.5, (1, 2), True and 1", "InputError at fit", d_labels),
    (
        "10k-classes",
        "fit 10,000 one-shot classes (bundle steps 0)",
        "<= 250 MiB above loaded; short error",
        d_10k,
    ),
    (
        "10k-classes-steps5",
        "the same with 5 gradient steps",
        "<= 250 MiB above loaded",
        lambda py, w: d_10k(py, w, 5),
    ),
]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--python", default=sys.executable, help="interpreter whose metalite is drilled"
    )
    ap.add_argument(
        "--before", default=None, help="a second interpreter (e.g. with main's metalite) to compare"
    )
    ap.add_argument("--only", default="", help="comma-separated drill names")
    args = ap.parse_args(argv)
    only = set(filter(None, args.only.split(",")))
    runs = [("observed", args.python)] + ([("before", args.before)] if args.before else [])
    print(f"| drill | what | expected | {' | '.join(name for name, _ in runs)} |")
    print("|---" * (3 + len(runs)) + "|")
    for name, what, expected, fn in DRILLS:
        if only and name not in only:
            continue
        cells = []
        for _, py in runs:
            with tempfile.TemporaryDirectory(prefix=f"drill-{name}-") as tmp:
                print(f"running {name} with {py} ...", file=sys.stderr, flush=True)
                cells.append(str(fn(py, Path(tmp))).replace("|", "\\|"))
        print(f"| {name} | {what} | {expected} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
