"""Apply an offered release: verify, download, re-embed the support set, health-check, switch atomically.

Order of checks (any failure leaves the running version untouched and returns the reason):
signature over the release bytes -> version newer than the running one -> each file's size and sha256
while downloading into ``HOME/tmp`` -> ``open_bundle`` (manifest checksums again) -> the running
state's support images re-embedded by the new backbone and the head re-adapted (and the open-set
threshold recalibrated, if the device uses one) -> leave-one-out
accuracy on the support set not more than ``max_drop`` below the running version's -> the state saved
next to the new bundle -> ``DeviceHome.install`` (rename + atomic pointer replace).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field

from metalite.common.errors import MetaliteError, one_line

from .. import head as headlib
from ..bundle import open_bundle
from ..classifier import FewShotClassifier
from ..errors import BundleError
from ..plural import plural
from ..state import load_state
from . import answers
from .errors import BadAnswerError, UpdateRefusedError
from .health import support_accuracy
from .home import DeviceHome
from .release import verify_release


@dataclass
class UpdateResult:
    """What happened to an offered release.

    Attributes:
      status: ``"switched"``, ``"current"`` (already running it), ``"refused"`` (failed a check) or
        ``"failed"`` (could not be completed: network, disk, ...).
      offered: the offered version; running: the version running afterwards.
      reason: one line, empty when switched/current.
      health: support-set accuracy before/after (``before``, ``after``, ``method``, ``images``, ``classes``,
        ``measures``: what was scored, images the fleet may have trained on).
      seconds: time per phase (``download``, ``verify``, ``reembed``, ``switch``, ``total``).
    """

    status: str
    offered: int | None
    running: int | None
    reason: str = ""
    health: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


TRAINING_DATA = "the device's own support images, which the fleet's update may have trained on"


def _carry_state(home: DeviceHome, staging, max_drop: float, delegate: str, say) -> tuple:
    """Re-embed the running state's support images with the staged bundle, check, save next to (not into) the
    staging directory; returns (health, the saved state or None). Call under ``home.lock``."""
    if home.version is None or not home.state_path().is_file():
        return {"classes": 0}, None
    running = open_bundle(home.bundle_dir(), verify=False)
    st = load_state(home.state_path(), running.manifest_sha256)
    if st.images is None:
        raise UpdateRefusedError(
            "the running state keeps no support images (state format 1); "
            "adapt again so an update can carry the classes"
        )
    rows = {c: st.support_labels == i for i, c in enumerate(st.classes)}
    say(
        f"re-embedding {plural(len(st.images), 'support image')} of {plural(len(st.classes), 'class')} "
        "with the new backbone"
    )
    # the open-set threshold is recalibrated on the new embeddings, at the rate the device chose
    unknown = None if st.unknown is None else st.unknown["rate"]
    new = FewShotClassifier(staging, delegate=delegate, unknown=unknown).fit(
        {c: st.images[m] for c, m in rows.items()}
    )
    before = support_accuracy(
        headlib.load_head(running.head_path), {c: st.support[m] for c, m in rows.items()}
    )
    after = support_accuracy(new.head_spec, new.support_embeddings())
    # the support set is what a sync shares with the fleet: a bundle from `fleet update` may have trained on
    # these very images, so this check guards against breakage, not a measure of accuracy on new drawings
    health = {
        "before": before[0],
        "after": after[0],
        "method": after[1],
        "images": after[2],
        "classes": len(st.classes),
        "measures": TRAINING_DATA,
    }
    say(
        f"health check ({after[1]}, {plural(after[2], 'image')}; {TRAINING_DATA}): accuracy {before[0]:.3f} -> "
        f"{after[0]:.3f}"
    )
    if after[0] < before[0] - max_drop - 1e-9:
        raise UpdateRefusedError(
            f"health check failed: {after[1]} accuracy on the support set would drop from "
            f"{before[0]:.3f} to {after[0]:.3f} (allowed drop {max_drop:.3f})"
        )
    out = staging.parent / f"{staging.name}.npz"
    new.save(out)
    return health, out


def switch_to(
    home: DeviceHome,
    staging,
    version: int,
    manifest_sha256: str,
    max_drop: float,
    delegate: str,
    say,
    seconds: dict,
) -> dict:
    """Carry the running classes to the verified bundle in ``staging`` and make it ``version``; returns the health.

    The one switch of a device home, shared by ``apply_offer`` (a fleet release) and ``install_bundle``
    (a bundle from disk). Raises ``UpdateRefusedError`` when the health check fails (nothing changed).
    """
    t = time.perf_counter()
    with home.lock():  # nothing can save a state between reading the running one and the switch
        health, state = _carry_state(home, staging, max_drop, delegate, say)
        seconds["reembed"] = time.perf_counter() - t
        t = time.perf_counter()
        home.install(staging, version, manifest_sha256, state)
        seconds["switch"] = time.perf_counter() - t
    return health


def _stage(client, doc: dict, offer: dict, staging, seconds: dict, say):
    """Download and verify the release's files into ``staging``; returns the opened bundle."""
    t = time.perf_counter()
    total = sum(f["bytes"] for f in doc["files"].values())
    say(
        f"downloading v{doc['version']}: {plural(len(doc['files']), 'file')}, {total / 1024:.0f} KiB"
    )
    for name, f in doc["files"].items():
        client.download(f"/v1/blobs/{f['sha256']}", staging / name, f["bytes"], f["sha256"])
    (staging / "release.json").write_bytes(
        offer["release"].encode("utf-8", "replace")
    )  # the verified bytes
    (staging / "release.sig").write_bytes((offer.get("signature") or "").encode("utf-8", "replace"))
    seconds["download"] = time.perf_counter() - t
    t = time.perf_counter()
    bundle = open_bundle(staging)
    if bundle.manifest_sha256 != doc["manifest_sha256"]:
        raise UpdateRefusedError(f"v{doc['version']}: manifest.json is not the signed one; refused")
    seconds["verify"] = time.perf_counter() - t
    return bundle


def apply_offer(
    home: DeviceHome,
    client,
    offer: dict,
    public_key: bytes | None,
    allow_unsigned: bool = False,
    allow_older: bool = False,
    max_drop: float = 0.1,
    delegate: str = "auto",
    say=None,
) -> UpdateResult:
    """Install the release ``offer`` (``GET /v1/releases/latest``'s answer) if it is newer and passes every check.

    Args:
      home: the device home; client: a ``FleetClient``.
      offer: ``{"version", "release": signed JSON text, "signature": hex}``.
      public_key: the server's key (32 bytes) or None; allow_unsigned / allow_older: explicit opt-ins.
      max_drop: largest allowed drop of the support-set accuracy (0.1 = 10 points).
      delegate: for the new classifier's backbone; say: progress callback taking one line.
    Returns:
      An ``UpdateResult``; never raises for a bad offer.
    """
    say = say or (lambda msg: None)
    t0, seconds, running = time.perf_counter(), {}, home.version
    try:
        offer = answers.offer(offer)
        doc = verify_release(
            offer["release"].encode("utf-8", "replace"),
            offer.get("signature"),
            public_key,
            allow_unsigned,
        )
    except (UpdateRefusedError, BadAnswerError) as e:
        offered = offer.get("version") if isinstance(offer, dict) else None
        return UpdateResult(
            "refused", offered if isinstance(offered, int) else None, running, str(e)
        )
    version = doc["version"]
    if version == running:
        return UpdateResult("current", version, running)
    if running is not None and version < running and not allow_older:
        return UpdateResult(
            "refused",
            version,
            running,
            f"v{version} is older than the running v{running}; refused (--allow-older accepts it)",
        )
    staging = home.staging(version)
    try:
        _stage(client, doc, offer, staging, seconds, say)
        health = switch_to(
            home, staging, version, doc["manifest_sha256"], max_drop, delegate, say, seconds
        )
    except (UpdateRefusedError, BundleError) as e:  # the offer itself is bad
        return UpdateResult("refused", version, running, str(e), seconds=seconds)
    except (MetaliteError, OSError) as e:
        return UpdateResult("failed", version, running, one_line(e), seconds=seconds)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        staging.parent.joinpath(f"{staging.name}.npz").unlink(missing_ok=True)
    seconds["total"] = time.perf_counter() - t0
    say(
        f"switched to v{version} (was {'v' + str(running) if running is not None else 'nothing'}) "
        f"in {seconds['total']:.2f} s"
    )
    return UpdateResult("switched", version, version, health=health, seconds=seconds)


def describe(result: UpdateResult) -> str:
    """One line for logs and the server report."""
    if result.status == "switched":
        return f"switched to v{result.offered}" + (
            f" ({json.dumps(result.health)})" if result.health else ""
        )
    if result.status == "current":
        return f"v{result.running} is current"
    return f"v{result.offered} {result.status}: {result.reason}"
