"""One sync of a device with its fleet server: upload the outbox, take a newer bundle if any, report.

``sync(home, server, token, public_key)`` is what ``metalite sync`` runs (from cron or a systemd timer).
An unreachable server is not an error: the outbox stays as it is and the result says ``offline``.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass

import numpy as np

from . import answers
from .client import FleetClient
from .errors import ServerRefusedError, ServerUnreachableError
from .home import DeviceHome
from .outbox import Outbox
from .update import UpdateResult, apply_offer
from .wire import encode_image

UPLOAD_BATCH = 64


@dataclass
class SyncResult:
    """What a sync did.

    Attributes:
      offline: the server could not be reached (everything else is then zero/None).
      uploaded: examples the server stored now; duplicates: examples it already had (retries).
      shared: support images newly queued for upload this sync (``share_support``).
      pending: examples still in the outbox; update: the ``UpdateResult`` or None (no release / not asked).
      running: the version running afterwards; seconds: wall time of the sync.
    """

    offline: bool = False
    uploaded: int = 0
    duplicates: int = 0
    shared: int = 0
    pending: int = 0
    update: UpdateResult | None = None
    running: int | None = None
    seconds: float = 0.0


def _wire(example: dict) -> dict:
    """An outbox row as the server takes it: its raw pixels in the wire format, RGB when their byte count says so."""
    e = dict(example)
    h, w = int(e["height"]), int(e["width"])
    px = np.frombuffer(e.pop("pixels"), np.uint8)
    e.update(encode_image(px.reshape(h, w, 3) if px.size == 3 * h * w else px.reshape(h, w)))
    return e


def upload_outbox(
    outbox: Outbox, client: FleetClient, batch: int = UPLOAD_BATCH, say=None
) -> tuple:
    """Send the outbox in batches, oldest first; each batch leaves the outbox once the server acknowledged it.

    Returns:
      (stored, duplicates). Raises ``ServerUnreachableError``/``ServerRefusedError`` (what was
      acknowledged so far is already removed; the rest stays).
    """
    stored = dup = 0
    total = outbox.pending()
    while True:
        rows = outbox.oldest(batch)
        if not rows:
            return stored, dup
        try:
            answer = client.call("POST", "/v1/examples", {"examples": [_wire(r) for r in rows]})
        except ServerRefusedError as e:
            if e.status != 413 or batch == 1:
                raise
            batch = max(
                1, batch // 2
            )  # a server with a smaller body limit: smaller batches, not a stuck outbox
            continue
        ids, n_stored, n_dup = answers.upload(answer, [r["id"] for r in rows])
        outbox.remove(ids)
        stored, dup = stored + n_stored, dup + n_dup
        if say and total > batch:
            say(f"uploaded {stored + dup}/{total} examples")
        if len(ids) < len(rows):  # the server took part of the batch; do not loop on the rest
            return stored, dup


def queue_support(home: DeviceHome, outbox: Outbox) -> int:
    """Queue the running state's support images (label + pixels) not sent before; returns how many.

    The back end fine-tunes on them (``metalite fleet update``). A state without images (format 1)
    has nothing to share.
    """
    if home.version is None or not home.state_path().is_file():
        return 0
    from ..state import load_state

    st = load_state(home.state_path())
    if st.images is None or not len(st.images):
        return 0
    return outbox.add_support(st.images, [st.classes[i] for i in st.support_labels], home.version)


def _report(
    client: FleetClient, home: DeviceHome, result: UpdateResult | None, pending: int
) -> None:
    cur_state = home.state_path() if home.version is not None else None
    body = {
        "version": home.version,
        "pending": pending,
        "has_state": bool(cur_state and cur_state.is_file()),
        "platform": f"{platform.system()} {platform.machine()} python {platform.python_version()}",
    }
    if result is not None and result.status != "current":
        body.update(
            event=result.status,
            offered=result.offered,
            reason=result.reason,
            health=result.health,
            seconds=result.seconds,
        )
    client.call("POST", "/v1/report", body)


def sync(
    home,
    server: str,
    token: str,
    public_key: bytes | None = None,
    allow_unsigned: bool = False,
    allow_older: bool = False,
    max_drop: float | None = None,
    upload: bool = True,
    update: bool = True,
    share_support: bool | None = None,
    delegate: str = "auto",
    timeout: float = 30.0,
    say=None,
) -> SyncResult:
    """Sync one device home with the server.

    Args:
      home: a ``DeviceHome`` or its path.
      server, token: the server URL and the device token (``metalite fleet enroll``).
      public_key: the server's Ed25519 key (``release.parse_public_key``); None only with ``allow_unsigned``.
      allow_unsigned, allow_older: accept unsigned releases / versions older than the running one.
      max_drop: allowed drop of the support-set accuracy (default: the home's config, 0.1).
      upload, update: do these steps.
      share_support: also upload the running state's support images, once each (default: the home's
        config ``share_support``, True).
      delegate: for re-embedding after an update; timeout: seconds per HTTP call; say: progress callback.
    Returns:
      A ``SyncResult``.
    Raises:
      ServerRefusedError: the server refused the token or a request (revoked, too large...).
      SyncError: another sync is running in this home, bad server URL or public key.
    """
    home = home if isinstance(home, DeviceHome) else DeviceHome(home)
    say = say or (lambda msg: None)
    t0 = time.perf_counter()
    client = FleetClient(server, token, timeout)
    result = SyncResult()
    cfg = home.config()
    drop = float(cfg["max_accuracy_drop"] if max_drop is None else max_drop)
    share = bool(cfg["share_support"] if share_support is None else share_support)
    with home.sync_lock():
        home.clean_tmp()
        outbox = home.outbox()
        try:
            if upload:
                if share:
                    result.shared = queue_support(home, outbox)
                result.uploaded, result.duplicates = upload_outbox(outbox, client, say=say)
            if update:
                offer = client.call("GET", "/v1/releases/latest", missing_ok=True)
                if offer is not None:  # apply_offer checks its shape (a bad one is refused, exit 3)
                    result.update = apply_offer(
                        home,
                        client,
                        offer,
                        public_key,
                        allow_unsigned,
                        allow_older,
                        drop,
                        delegate,
                        say,
                    )
            result.pending = outbox.pending()
            _report(client, home, result.update, result.pending)
        except (
            ServerUnreachableError
        ) as e:  # also ServerBusyError (disk full, busy): try again next sync
            say(str(e))
            result.offline = True
            result.pending = outbox.pending()
    result.running, result.seconds = home.version, time.perf_counter() - t0
    return result
