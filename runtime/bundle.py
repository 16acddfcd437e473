"""Open and verify a bundle (docs/DESIGN.md, "Bundle"): a directory or a .zip of the same files.

``open_bundle(path)`` checks ``manifest.json`` (format, format_version, required fields) and the size and
sha256 of every file it lists, and returns a ``Bundle``. Anything wrong is one ``BundleError`` line naming
the file. A .zip is extracted once into a cache directory keyed by the zip's sha256
(``$METALITE_CACHE`` or ``$XDG_CACHE_HOME/metalite`` or ``~/.cache/metalite``; a temporary directory if
none is writable) and the extracted files are verified like a directory.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BundleError, one_line
from .files import cache_root
from .preprocess import settings as preprocess_settings

BUNDLE_FORMAT = "metalite-bundle"
BUNDLE_FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path) -> str:
    """Return the hex sha256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Bundle:
    """A verified bundle.

    Attributes:
      source: what the user passed (directory or .zip), for messages.
      root: directory holding the files (the extraction directory for a .zip).
      manifest: the parsed manifest.json.
      manifest_sha256: sha256 of manifest.json's bytes; identifies the bundle (state files record it).
      input_shape: (H, W, C) of one model input.
      preprocess: manifest ``input.preprocess`` with defaults filled in.
      input_quantization / output_quantization: ``(scale, zero_point)`` from the manifest.
      embedding_dim: size of the backbone output.
      backbone_path, head_path: paths of backbone.tflite and head.npz.
      edgetpu_path: path of backbone_edgetpu.tflite, or None if the bundle has none.
    """

    source: str
    root: Path
    manifest: dict
    manifest_sha256: str
    input_shape: tuple
    preprocess: dict
    input_quantization: tuple
    output_quantization: tuple
    embedding_dim: int
    backbone_path: Path
    head_path: Path
    edgetpu_path: Path | None = None
    files: dict = field(default_factory=dict)


def _get(manifest: dict, dotted: str, kind=None):
    cur = manifest
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise BundleError(f"{MANIFEST}: missing field {dotted!r}")
        cur = cur[part]
    if kind is not None and (not isinstance(cur, kind) or isinstance(cur, bool)):
        raise BundleError(f"{MANIFEST}: field {dotted!r} has the wrong type ({type(cur).__name__})")
    return cur


def _quant(manifest: dict, which: str) -> tuple:
    scale = float(_get(manifest, f"{which}.quantization.scale", (int, float)))
    zp = int(_get(manifest, f"{which}.quantization.zero_point", (int, float)))
    if not scale > 0:
        raise BundleError(f"{MANIFEST}: {which}.quantization.scale must be > 0, got {scale}")
    return scale, zp


def _safe_members(zf: zipfile.ZipFile, zpath: str) -> list:
    names = [n for n in zf.namelist() if not n.endswith("/")]
    for n in names:
        p = Path(n)
        if p.is_absolute() or ".." in p.parts:
            raise BundleError(f"{zpath}: unsafe path {n!r} inside the zip")
    return names


def _extract_zip(zpath: Path) -> Path:
    """Extract ``zpath`` into the cache (once per zip content); return the directory holding manifest.json."""
    digest = sha256_file(zpath)
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError) as e:
        raise BundleError(f"{zpath}: not a readable zip ({one_line(e)})") from None
    with zf:
        names = _safe_members(zf, str(zpath))
        manifests = [n for n in names if Path(n).name == MANIFEST]
        if len(manifests) != 1 or len(Path(manifests[0]).parts) > 2:
            raise BundleError(f"{zpath}: expected exactly one {MANIFEST} at the top of the zip (or in one folder)")
        inner = Path(manifests[0]).parent
        for root in (cache_root("bundles"), Path(tempfile.gettempdir()) / "metalite-bundles"):
            target = root / digest[:32]
            if (target / inner / MANIFEST).is_file():
                return target / inner
            try:
                root.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
            except OSError:
                continue
            try:
                zf.extractall(tmp, members=names)
                try:
                    os.replace(tmp, target)
                except OSError:  # another process extracted it first
                    if not (target / inner / MANIFEST).is_file():
                        raise
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise BundleError(f"{zpath}: cannot extract ({one_line(e)})") from None
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return target / inner
    raise BundleError(f"{zpath}: no writable directory to extract the bundle into (set METALITE_CACHE)")


def open_bundle(path, verify: bool = True) -> Bundle:
    """Read and verify a bundle.

    Args:
      path: bundle directory or .zip file (str or Path).
      verify: check size and sha256 of every file listed in the manifest (default True).
    Returns:
      A ``Bundle``.
    Raises:
      BundleError: one line naming the file and what is wrong (missing, not JSON, unknown format or
        format_version, missing field, size/sha256 mismatch).
    """
    src = Path(path)
    if not src.exists():
        raise BundleError(f"{src}: no such bundle (expected a directory or a .zip)")
    if src.is_file():
        if not zipfile.is_zipfile(src):
            raise BundleError(f"{src}: not a bundle (expected a directory or a .zip)")
        root = _extract_zip(src)
    else:
        root = src
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{src}: {MANIFEST} is missing; is this a metalite bundle?")
    raw = mpath.read_bytes()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{MANIFEST} in {src}: not valid JSON ({one_line(e)})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} in {src}: expected a JSON object")
    try:
        return _parse(src, root, manifest, hashlib.sha256(raw).hexdigest(), verify)
    except BundleError as e:
        msg = str(e)
        raise BundleError(msg if str(src) in msg else f"{msg} (bundle {src})") from None


def _parse(src: Path, root: Path, manifest: dict, manifest_sha: str, verify: bool) -> Bundle:
    fmt = manifest.get("format")
    if fmt != BUNDLE_FORMAT:
        raise BundleError(f"{MANIFEST}: format is {fmt!r}, expected {BUNDLE_FORMAT!r}")
    ver = manifest.get("format_version")
    if ver not in BUNDLE_FORMAT_VERSIONS:
        raise BundleError(f"{MANIFEST}: format_version {ver!r} is not supported by this runtime "
                          f"(supported: {', '.join(map(str, BUNDLE_FORMAT_VERSIONS))}); upgrade metalite")
    files = _get(manifest, "files", dict)
    for name, info in files.items():
        fpath = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{MANIFEST}: unsafe file name {name!r}")
        if not fpath.is_file():
            raise BundleError(f"{name}: listed in {MANIFEST} but missing")
        if not verify:
            continue
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise BundleError(f"{MANIFEST}: files[{name!r}] has no sha256")
        size = fpath.stat().st_size
        if "bytes" in info and int(info["bytes"]) != size:
            raise BundleError(f"{name}: size {size} bytes does not match {MANIFEST} ({info['bytes']} bytes); "
                              "the file is truncated or was changed")
        actual = sha256_file(fpath)
        if actual != info["sha256"].lower():
            raise BundleError(f"{name}: sha256 mismatch ({actual[:12]}… != {info['sha256'][:12]}… in {MANIFEST}); "
                              "the file is corrupt or was changed")

    def listed(key: str, default: str | None, required: bool) -> Path | None:
        name = manifest.get(key.split(".")[0], {}).get(key.split(".")[1], default)
        if name is None:
            return None
        if name not in files:
            if required:
                raise BundleError(f"{name}: not listed in {MANIFEST} 'files' (no checksum)")
            return None
        return root / name

    backbone = listed("backbone.file", "backbone.tflite", True)
    head = listed("head.file", "head.npz", True)
    edgetpu = listed("backbone.edgetpu_file", None, False)

    shape = _get(manifest, "input.shape", list)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise BundleError(f"{MANIFEST}: input.shape must be [H, W, C] of positive ints, got {shape}")
    if shape[2] != 1:
        raise BundleError(f"{MANIFEST}: input.shape {shape} has {shape[2]} channels; this runtime supports 1 (gray)")
    pre = preprocess_settings()
    pre.update(manifest.get("input", {}).get("preprocess") or {})
    if pre["color"] != "L" or pre["resize"] != "area":
        raise BundleError(f"{MANIFEST}: input.preprocess color={pre['color']!r} resize={pre['resize']!r} "
                          "is not supported (this runtime knows color 'L', resize 'area')")
    rng = pre["range"]
    if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) for v in rng)):
        raise BundleError(f"{MANIFEST}: input.preprocess.range must be [lo, hi], got {rng!r}")
    dim = _get(manifest, "output.embedding_dim", int)
    if dim < 1:
        raise BundleError(f"{MANIFEST}: output.embedding_dim must be >= 1, got {dim}")
    return Bundle(source=str(src), root=root, manifest=manifest, manifest_sha256=manifest_sha,
                  input_shape=tuple(shape), preprocess=pre, input_quantization=_quant(manifest, "input"),
                  output_quantization=_quant(manifest, "output"), embedding_dim=int(dim),
                  backbone_path=backbone, head_path=head, edgetpu_path=edgetpu, files=dict(files))
