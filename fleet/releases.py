"""Releases: publish a bundle as the next signed version, re-publish an old one (rollback), serve the latest.

A release stores every bundle file as a blob, the signed release document (``metalite.runtime.sync.release``)
and, if given, the float model directory the bundle was built from (``model_files``; what a later
fine-tune starts from). Versions only go up: a rollback publishes the old files as a new version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from metalite.common.sqlite import transaction
from metalite.runtime.bundle import MANIFEST, open_bundle
from metalite.runtime.errors import BundleError
from metalite.runtime.sync.release import make_release

from . import keys
from .errors import FleetError


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _model_files(root, model_dir) -> dict:
    """Store a model directory's files (not ``checkpoints/``) as blobs; returns {relative path: (sha256, bytes)}."""
    mdir = Path(model_dir)
    try:
        cfg = json.loads((mdir / "config.json").read_text())
    except (OSError, ValueError):
        cfg = None
    if not isinstance(cfg, dict) or cfg.get("format") != "metalite-model":
        raise FleetError(
            f"{mdir}: not a metalite model directory (no config.json with format 'metalite-model')"
        )
    out = {}
    for p in sorted(mdir.rglob("*")):
        rel = p.relative_to(mdir)
        if (
            p.is_file()
            and rel.parts[0] != "checkpoints"
            and not any(s.startswith(".") for s in rel.parts)
        ):
            out[rel.as_posix()] = root.blobs.put_file(p)
    return out


def _insert(
    root, files: dict, model: dict, manifest_sha256: str, note: str, source: str, metrics=None
) -> int:
    """Sign and store the next version in one transaction; returns its number."""
    key = root.signing_key()[0]
    conn, now = root.db(), time.time()
    with transaction(conn):
        version = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM releases").fetchone()[0]
        doc = make_release(
            version,
            manifest_sha256,
            {n: {"sha256": s, "bytes": b} for n, (s, b) in files.items()},
            _iso(now),
            note,
        )
        conn.execute(
            "INSERT INTO releases (version, release, signature, manifest_sha256, created, note, source, "
            "metrics) VALUES (?,?,?,?,?,?,?,?)",
            (
                version,
                doc.decode("utf-8"),
                keys.sign(key, doc),
                manifest_sha256,
                now,
                note,
                source,
                None if metrics is None else json.dumps(metrics),
            ),
        )
        conn.executemany(
            "INSERT INTO release_files VALUES (?,?,?,?)",
            [(version, n, s, b) for n, (s, b) in files.items()],
        )
        conn.executemany(
            "INSERT INTO model_files VALUES (?,?,?,?)",
            [(version, p, s, b) for p, (s, b) in model.items()],
        )
    return version


def publish(root, bundle, model_dir=None, note: str = "", metrics: dict | None = None) -> dict:
    """Verify ``bundle`` (directory or .zip), store it and sign it as the next version.

    Args:
      root: the ``FleetRoot``; bundle: the bundle; model_dir: the float model directory it was built
        from, kept with the release; note: free text shown by ``fleet status``.
    Returns:
      {"version", "manifest_sha256", "files", "bytes", "model_files", "left_out": names not sent to devices}.
    Raises:
      FleetError: the bundle does not verify or the model directory is not one.
    """
    try:
        b = open_bundle(bundle)
    except BundleError as e:
        raise FleetError(f"cannot publish: {e}") from None
    files = {MANIFEST: root.blobs.put_file(b.root / MANIFEST)}
    if files[MANIFEST][0] != b.manifest_sha256:
        raise FleetError(f"{bundle}: manifest.json changed while publishing; try again")
    manifest, left_out = _device_manifest(b.manifest)
    if left_out:
        with tempfile.TemporaryDirectory(dir=root.path) as tmp:
            (Path(tmp) / MANIFEST).write_bytes(manifest)
            files = {MANIFEST: root.blobs.put_file(Path(tmp) / MANIFEST)}
    files.update({n: root.blobs.put_file(b.root / n) for n in sorted(b.files) if n not in left_out})
    model = _model_files(root, model_dir) if model_dir is not None else {}
    version = _insert(
        root, files, model, files[MANIFEST][0], note, str(Path(bundle).resolve()), metrics
    )
    return {
        "version": version,
        "manifest_sha256": files[MANIFEST][0],
        "files": len(files),
        "bytes": sum(s for _, s in files.values()),
        "model_files": len(model),
        "left_out": sorted(left_out),
    }


def _device_manifest(manifest: dict) -> tuple:
    """(manifest bytes or None if unchanged, names left out): the bundle as devices get it, without the float
    comparison backbone (``backbone.float_file``, for ``bench`` on a workstation; no device loads it, yet it is
    most of the bytes)."""
    name = (manifest.get("backbone") or {}).get("float_file")
    if not name:
        return None, set()
    manifest = json.loads(json.dumps(manifest))
    manifest["backbone"]["float_file"] = None
    manifest["files"].pop(name, None)
    return json.dumps(manifest, indent=2).encode("utf-8"), {name}


def rollback(root, to_version: int, note: str | None = None) -> dict:
    """Publish the files of ``to_version`` again as the next version (devices only ever move forward)."""
    conn = root.db()
    rel = conn.execute(
        "SELECT manifest_sha256 FROM releases WHERE version = ?", (to_version,)
    ).fetchone()
    if rel is None:
        raise FleetError(f"no release v{to_version}")
    files = {
        r["name"]: (r["sha256"], r["bytes"])
        for r in conn.execute(
            "SELECT name, sha256, bytes FROM release_files WHERE version = ?", (to_version,)
        )
    }
    model = {
        r["path"]: (r["sha256"], r["bytes"])
        for r in conn.execute(
            "SELECT path, sha256, bytes FROM model_files WHERE version = ?", (to_version,)
        )
    }
    missing = [n for n, (s, _) in files.items() if not root.blobs.has(s)]
    if missing:
        raise FleetError(f"v{to_version}: blob of {missing[0]} is missing from {root.blobs.dir}")
    version = _insert(
        root,
        files,
        model,
        rel["manifest_sha256"],
        note or f"rollback to v{to_version}",
        f"v{to_version}",
    )
    return {
        "version": version,
        "manifest_sha256": rel["manifest_sha256"],
        "files": len(files),
        "bytes": sum(b for _, b in files.values()),
        "model_files": len(model),
    }


def latest_offer(root) -> dict | None:
    """``{"version", "release", "signature"}`` of the newest release, or None."""
    row = (
        root.db()
        .execute("SELECT version, release, signature FROM releases ORDER BY version DESC LIMIT 1")
        .fetchone()
    )
    return (
        None
        if row is None
        else {"version": row["version"], "release": row["release"], "signature": row["signature"]}
    )


def is_release_blob(root, sha256: str) -> bool:
    """True if ``sha256`` is a file of some release (only those are served; uploads never are)."""
    return (
        root.db()
        .execute("SELECT 1 FROM release_files WHERE sha256 = ? LIMIT 1", (sha256,))
        .fetchone()
        is not None
    )


def list_releases(root) -> list:
    """Every release: version, created, note, source, manifest_sha256, files, bytes, model_files, metrics."""
    rows = root.db().execute(
        "SELECT r.version, r.created, r.note, r.source, r.manifest_sha256, r.metrics, "
        "(SELECT count(*) FROM release_files f WHERE f.version = r.version) AS files, "
        "(SELECT coalesce(sum(bytes), 0) FROM release_files f WHERE f.version = r.version) AS bytes, "
        "(SELECT count(*) FROM model_files m WHERE m.version = r.version) AS model_files "
        "FROM releases r ORDER BY r.version"
    )
    return [
        {**dict(r), "metrics": json.loads(r["metrics"]) if r["metrics"] else None} for r in rows
    ]


def _materialize(root, rows, dest) -> Path:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=False)
    for rel, sha in rows:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root.blobs.path(sha), target)
    return dest


def export_bundle(root, version: int, dest) -> Path:
    """Write release ``version``'s bundle files to the new directory ``dest`` (for evaluation or re-use)."""
    rows = [
        (r["name"], r["sha256"])
        for r in root.db().execute(
            "SELECT name, sha256 FROM release_files WHERE version = ?", (version,)
        )
    ]
    if not rows:
        raise FleetError(f"no release v{version}")
    return _materialize(root, rows, dest)


def export_model(root, version: int, dest) -> Path:
    """Write the model directory kept with release ``version`` to ``dest``; FleetError if none was kept."""
    rows = [
        (r["path"], r["sha256"])
        for r in root.db().execute(
            "SELECT path, sha256 FROM model_files WHERE version = ?", (version,)
        )
    ]
    if not rows:
        raise FleetError(f"release v{version} has no model directory (publish it with --model)")
    for rel, _ in rows:
        if os.path.isabs(rel) or ".." in Path(rel).parts:
            raise FleetError(f"release v{version}: unsafe model path {rel!r}")
    return _materialize(root, rows, dest)
