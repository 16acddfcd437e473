"""Open and verify a bundle (docs/DESIGN.md, "Bundle"): a directory or a .zip of the same files.

``open_bundle(path)`` checks ``manifest.json`` (format, format_version, the type and range of every
field the runtime reads) and the size and sha256 of every file it lists, and returns a ``Bundle``.
Anything wrong is one ``BundleError`` line naming the file and field. A .zip is extracted once into a
cache directory keyed by the zip's sha256 (``$METALITE_CACHE`` or ``$XDG_CACHE_HOME/metalite`` or
``~/.cache/metalite``; a temporary directory if none is writable): only ``manifest.json`` (at most
``MAX_MANIFEST_BYTES``) and the files it lists are unpacked, each stopped at its recorded size, and all of
them together at ``MAX_ZIP_EXPANSION`` times the zip's size; the extracted files are then verified like a
directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from metalite.common.errors import one_line
from metalite.common.files import cache_root

from .errors import BundleError
from .names import bundle_file_problem
from .preprocess import BACKGROUND, CHANNELS, COLOR_CHANNELS, settings

BUNDLE_FORMAT = "metalite-bundle"
BUNDLE_FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
MAX_ZIP_EXPANSION = 100
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


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
    cur, seen = manifest, []
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            raise BundleError(
                f"{MANIFEST}: field {'.'.join(seen)!r} must be an object, got {type(cur).__name__}"
            )
        if part not in cur:
            raise BundleError(f"{MANIFEST}: missing field {dotted!r}")
        cur = cur[part]
        seen.append(part)
    if kind is not None and (not isinstance(cur, kind) or isinstance(cur, bool)):
        raise BundleError(f"{MANIFEST}: field {dotted!r} has the wrong type ({type(cur).__name__})")
    return cur


def _section(manifest: dict, key: str) -> dict:
    """``manifest[key]`` if it is an object, ``{}`` if absent; BundleError for anything else."""
    value = manifest.get(key, {})
    if not isinstance(value, dict):
        raise BundleError(
            f"{MANIFEST}: field {key!r} must be an object, got {type(value).__name__}"
        )
    return value


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _quant(manifest: dict, which: str) -> tuple:
    scale = _get(manifest, f"{which}.quantization.scale", (int, float))
    zp = _get(manifest, f"{which}.quantization.zero_point", (int, float))
    if not (_finite(scale) and scale > 0):
        raise BundleError(
            f"{MANIFEST}: {which}.quantization.scale must be a finite number > 0, got {scale!r}"
        )
    if not (_finite(zp) and zp == int(zp) and -128 <= zp <= 255):
        raise BundleError(
            f"{MANIFEST}: {which}.quantization.zero_point must be an integer in [-128, 255], got {zp!r}"
        )
    return float(scale), int(zp)


def _files(manifest: dict) -> dict:
    """The ``files`` table checked: plain file names -> {"sha256": 64 hex digits, "bytes": int >= 0}."""
    files = _get(manifest, "files", dict)
    for name, info in files.items():
        if (
            not name
            or name in (".", "..", MANIFEST)
            or Path(name).name != name
            or "\\" in name
            or "\0" in name
        ):
            raise BundleError(f"{MANIFEST}: unsafe or invalid file name {name[:80]!r} in 'files'")
        problem = bundle_file_problem(name)
        if problem:
            raise BundleError(f"{MANIFEST}: {problem}")
        if (
            not isinstance(info, dict)
            or not isinstance(info.get("sha256"), str)
            or not _SHA256.fullmatch(info["sha256"])
        ):
            raise BundleError(f"{MANIFEST}: files[{name!r}] has no valid sha256")
        size = info.get("bytes")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BundleError(
                f"{MANIFEST}: files[{name!r}].bytes must be an integer >= 0, got {str(size)[:40]}"
            )
    return files


def _load_manifest(raw: bytes, where: str) -> dict:
    """Parse manifest.json's bytes into a dict; one-line BundleError if it is not a JSON object."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{MANIFEST} in {where}: {len(raw)} bytes, more than the {MAX_MANIFEST_BYTES} allowed"
        )
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BundleError(f"{MANIFEST} in {where}: not valid JSON ({one_line(e)[:120]})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} in {where}: expected a JSON object")
    return manifest


def _safe_members(zf: zipfile.ZipFile, zpath: str) -> list:
    names = [n for n in zf.namelist() if not n.endswith("/")]
    for n in names:
        p = Path(n)
        if p.is_absolute() or ".." in p.parts:
            raise BundleError(f"{zpath}: unsafe path {n!r} inside the zip")
    return names


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, limit: int) -> int:
    """Stream one member to ``dest``, refusing more than ``limit`` bytes; return the bytes written."""
    written = 0
    with zf.open(info) as src, open(dest, "wb") as out:
        while True:
            block = src.read(min(_CHUNK, limit - written + 1))
            if not block:
                return written
            written += len(block)
            if written > limit:
                raise BundleError(f"{info.filename}: expands beyond its recorded {limit} bytes")
            out.write(block)


def _extract_listed(zf: zipfile.ZipFile, prefix: str, dest: Path, zpath: Path) -> None:
    """Unpack manifest.json and the files it lists (nothing else) from ``zf`` into ``dest``."""
    minfo = zf.getinfo(prefix + MANIFEST)
    if minfo.file_size > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{MANIFEST} in {zpath}: {minfo.file_size} bytes, more than the {MAX_MANIFEST_BYTES} allowed"
        )
    with zf.open(minfo) as f:
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    files = _files(_load_manifest(raw, str(zpath)))
    budget = MAX_ZIP_EXPANSION * max(1, zpath.stat().st_size)
    if sum(info["bytes"] for info in files.values()) > budget:
        raise BundleError(
            f"{zpath}: the files listed in {MANIFEST} would expand to more than "
            f"{MAX_ZIP_EXPANSION} times the zip's size"
        )
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MANIFEST).write_bytes(raw)
    for name, info in files.items():
        try:
            member = zf.getinfo(prefix + name)
        except KeyError:
            raise BundleError(f"{name}: listed in {MANIFEST} but missing from {zpath}") from None
        if member.file_size != info["bytes"]:
            raise BundleError(
                f"{name}: {member.file_size} bytes in {zpath}, {MANIFEST} records {info['bytes']}; "
                "the file is truncated or was changed"
            )
        _copy_member(zf, member, dest / name, info["bytes"])


def _extract_zip(zpath: Path) -> Path:
    """Extract ``zpath``'s listed files into the cache (once per zip content); return the directory holding manifest.json."""
    digest = sha256_file(zpath)
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise BundleError(f"{zpath}: not a readable zip ({one_line(e)[:120]})") from None
    with zf:
        names = _safe_members(zf, str(zpath))
        manifests = [n for n in names if Path(n).name == MANIFEST]
        if len(manifests) != 1 or len(Path(manifests[0]).parts) > 2:
            raise BundleError(
                f"{zpath}: expected exactly one {MANIFEST} at the top of the zip (or in one folder)"
            )
        prefix = manifests[0][: -len(MANIFEST)]
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
                _extract_listed(zf, prefix, tmp / inner, zpath)
                try:
                    os.replace(tmp, target)
                except OSError:  # another process extracted it first
                    if not (target / inner / MANIFEST).is_file():
                        raise
            except (
                zipfile.BadZipFile,
                OSError,
                EOFError,
                ValueError,
                NotImplementedError,
                RuntimeError,
            ) as e:
                if isinstance(e, BundleError):
                    raise
                raise BundleError(f"{zpath}: cannot extract ({one_line(e)[:160]})") from None
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return target / inner
    raise BundleError(
        f"{zpath}: no writable directory to extract the bundle into (set METALITE_CACHE)"
    )


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
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{MANIFEST} in {src}: more than the {MAX_MANIFEST_BYTES} bytes allowed")
    raw = mpath.read_bytes()
    manifest = _load_manifest(raw, str(src))
    try:
        return _parse(src, root, manifest, hashlib.sha256(raw).hexdigest(), verify)
    except BundleError as e:
        msg = str(e)
        raise BundleError(msg if str(src) in msg else f"{msg} (bundle {src})") from None


def _check_file(root: Path, name: str, info: dict, verify: bool) -> None:
    fpath = root / name
    if not fpath.is_file():
        raise BundleError(f"{name}: listed in {MANIFEST} but missing")
    if not verify:
        return
    size = fpath.stat().st_size
    if info["bytes"] != size:
        raise BundleError(
            f"{name}: size {size} bytes does not match {MANIFEST} ({info['bytes']} bytes); "
            "the file is truncated or was changed"
        )
    actual = sha256_file(fpath)
    if actual != info["sha256"].lower():
        raise BundleError(
            f"{name}: sha256 mismatch ({actual[:12]}… != {info['sha256'][:12]}… in {MANIFEST}); "
            "the file is corrupt or was changed"
        )


def _preprocess(manifest: dict, channels: int) -> dict:
    """``input.preprocess`` with defaults filled in, checked against the input's ``channels``."""
    pre = settings(channels)
    given = _section(manifest, "input").get("preprocess") or {}
    if not isinstance(given, dict):
        raise BundleError(
            f"{MANIFEST}: input.preprocess must be an object, got {type(given).__name__}"
        )
    pre.update(given)
    if pre["color"] not in COLOR_CHANNELS or pre["resize"] != "area":
        raise BundleError(
            f"{MANIFEST}: input.preprocess color={str(pre['color'])[:20]!r} resize={str(pre['resize'])[:20]!r} "
            f"is not supported (this runtime knows color {' or '.join(map(repr, COLOR_CHANNELS))}, "
            "resize 'area')"
        )
    if COLOR_CHANNELS[pre["color"]] != channels:
        raise BundleError(
            f"{MANIFEST}: input.preprocess color {pre['color']!r} does not fit input.shape's {channels} "
            f"channel{'s' if channels > 1 else ''}"
        )
    if not isinstance(pre["invert"], bool):
        raise BundleError(
            f"{MANIFEST}: input.preprocess.invert must be true or false, got {str(pre['invert'])[:20]}"
        )
    rng = pre["range"]
    if not (
        isinstance(rng, list) and len(rng) == 2 and all(_finite(v) for v in rng) and rng[0] < rng[1]
    ):
        raise BundleError(
            f"{MANIFEST}: input.preprocess.range must be [lo, hi] with finite lo < hi, got {str(rng)[:60]}"
        )
    bg = pre.get("background", list(BACKGROUND))
    if not (
        isinstance(bg, list) and len(bg) == 3 and all(_finite(v) and 0 <= v <= 255 for v in bg)
    ):
        raise BundleError(
            f"{MANIFEST}: input.preprocess.background must be [r, g, b] in 0..255, got {str(bg)[:60]}"
        )
    return pre


def _parse(src: Path, root: Path, manifest: dict, manifest_sha: str, verify: bool) -> Bundle:
    fmt = manifest.get("format")
    if fmt != BUNDLE_FORMAT:
        raise BundleError(f"{MANIFEST}: format is {str(fmt)[:40]!r}, expected {BUNDLE_FORMAT!r}")
    ver = manifest.get("format_version")
    if ver not in BUNDLE_FORMAT_VERSIONS or isinstance(ver, bool):
        raise BundleError(
            f"{MANIFEST}: format_version {str(ver)[:20]} is not supported by this runtime "
            f"(supported: {', '.join(map(str, BUNDLE_FORMAT_VERSIONS))}); upgrade metalite"
        )
    files = _files(manifest)
    for name, info in files.items():
        _check_file(root, name, info, verify)

    def listed(section: str, key: str, default: str | None, required: bool) -> Path | None:
        name = _section(manifest, section).get(key, default)
        if name is None and not required:
            return None
        if not isinstance(name, str):
            raise BundleError(
                f"{MANIFEST}: {section}.{key} must be a file name, got {type(name).__name__}"
            )
        if name not in files:
            if required:
                raise BundleError(f"{name[:80]}: not listed in {MANIFEST} 'files' (no checksum)")
            return None
        return root / name

    backbone = listed("backbone", "file", "backbone.tflite", True)
    head = listed("head", "file", "head.npz", True)
    edgetpu = listed("backbone", "edgetpu_file", None, False)

    shape = _get(manifest, "input.shape", list)
    if len(shape) != 3 or not all(
        isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 1 << 16 for s in shape
    ):
        raise BundleError(
            f"{MANIFEST}: input.shape must be [H, W, C] of positive ints, got {str(shape)[:60]}"
        )
    if shape[2] not in CHANNELS:
        raise BundleError(
            f"{MANIFEST}: input.shape {shape} has {shape[2]} channels; this runtime supports 1 (gray) "
            "or 3 (RGB)"
        )
    pre = _preprocess(manifest, shape[2])
    dim = _get(manifest, "output.embedding_dim", int)
    if dim < 1:
        raise BundleError(f"{MANIFEST}: output.embedding_dim must be >= 1, got {dim}")
    return Bundle(
        source=str(src),
        root=root,
        manifest=manifest,
        manifest_sha256=manifest_sha,
        input_shape=tuple(shape),
        preprocess=pre,
        input_quantization=_quant(manifest, "input"),
        output_quantization=_quant(manifest, "output"),
        embedding_dim=int(dim),
        backbone_path=backbone,
        head_path=head,
        edgetpu_path=edgetpu,
        files=dict(files),
    )
