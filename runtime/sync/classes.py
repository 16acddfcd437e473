"""The device side of the class library: share one of this device's classes, list and pull shared ones.

    from metalite.runtime.sync import FleetClient, DeviceHome, share_class, shared_classes, pull_class
    client = FleetClient(server, token)
    share_class(DeviceHome(home_a), client, "cat")      # label + the support images kept with the state
    shared_classes(client)                              # [{"name", "images", "device", "version", "created"}]
    pull_class(DeviceHome(home_b), client, "cat")       # embedded by B's own backbone, head refit, state saved

Images travel, not embeddings, so a class shared from one bundle version works on any other: the puller
embeds them with its running backbone and adds the class through ``add_class`` (the same path as a class
taught on the device). No TensorFlow, no retraining.
"""

from __future__ import annotations

import urllib.parse

import numpy as np

from ..labels import short_repr
from ..names import class_name_problem
from . import answers
from .errors import BadAnswerError, SyncError
from .home import DeviceHome
from .wire import WireError, decode_image, encode_image

MAX_CLASS_ANSWER = (
    8 << 20
)  # bytes: a class of at most 2**21 pixels in base64 JSON (fleet.classes.MAX_CLASS_PIXELS)


def _home(home) -> DeviceHome:
    return home if isinstance(home, DeviceHome) else DeviceHome(home)


def class_images(home, name: str) -> np.ndarray:
    """uint8 (N, H, W) gray or (N, H, W, 3) RGB support images of class ``name`` in the running state;
    SyncError if there are none."""
    from ..state import load_state

    home = _home(home)
    if home.version is None or not home.state_path().is_file():
        raise SyncError("this device has no learned classes yet (no saved state)")
    st = load_state(home.state_path())
    if name not in st.classes:
        raise SyncError(
            f"this device has no class {short_repr(name)} (it has {len(st.classes)} classes)"
        )
    if st.images is None:
        raise SyncError(
            "the state keeps no support images (state format 1); teach the class again to share it"
        )
    return st.images[np.asarray(st.support_labels) == st.classes.index(name)]


def share_class(home, client, name: str, replace: bool = False) -> dict:
    """Send class ``name`` (label + its support images) to the library; returns the server's answer.

    Raises:
      SyncError: no such class here, or its images are not kept. ServerRefusedError: the name is taken
      (HTTP 409; ``replace`` renews a class this device shared), too many images (413).
    """
    if not isinstance(name, str):
        raise SyncError(f"only classes with str labels can be shared, got {short_repr(name)}")
    problem = class_name_problem(name)
    if problem:
        raise SyncError(f"class {short_repr(name)} cannot be shared: {problem}")
    imgs = class_images(home, name)
    wire = [encode_image(i) for i in imgs]
    return client.call(
        "POST",
        "/v1/classes",
        {"name": name, "images": wire, "version": _home(home).version, "replace": bool(replace)},
    )


def shared_classes(client) -> list:
    """The library's classes, newest first: [{"name", "images", "device", "version", "created"}]."""
    return answers.class_list(client.call("GET", "/v1/classes"))


def fetch_class(client, name: str):
    """uint8 (N, H, W) images of shared class ``name``, (N, H, W, 3) for colour (a list of arrays if their sizes
    or channels differ); ServerRefusedError 404 if unknown."""
    problem = class_name_problem(name)
    if problem:
        raise SyncError(f"no shared class can be named {short_repr(name)}: {problem}")
    got = answers.shared_class(
        client.call(
            "GET", "/v1/classes/" + urllib.parse.quote(name, safe=""), max_bytes=MAX_CLASS_ANSWER
        ),
        name,
    )
    imgs = []
    for i, img in enumerate(got):
        try:
            imgs.append(decode_image(img))
        except WireError as e:
            raise BadAnswerError(
                f"shared class {short_repr(name)}: image {i} is malformed ({e})"
            ) from None
    if not imgs:
        raise SyncError(f"shared class {short_repr(name)} has no images")
    return (
        imgs if len({im.shape for im in imgs}) > 1 else np.stack(imgs)
    )  # sizes differ: a list, as sent


def pull_class(home, client, name: str, replace: bool = False, delegate: str = "auto") -> dict:
    """Add shared class ``name`` to this device's classes, embedded by its own backbone; saves the state.

    Returns {"name", "images", "classes"}. Raises SyncError if the device has no bundle yet or already has
    a class of that name (``replace`` swaps its support images for the shared ones).
    """
    home = _home(home)
    if home.version is None:
        raise SyncError("this device has no bundle yet; run a sync first")
    imgs = fetch_class(client, name)
    clf = home.classifier(delegate=delegate)
    if name in clf.classes:
        if not replace:
            raise SyncError(
                f"this device already has a class {short_repr(name)}; pass replace to use the shared one"
            )
        clf.remove_class(
            name
        )  # in memory only: the state on disk changes once, below, or not at all
    clf.add_class(name, list(imgs))
    kept = clf.support_images()[name]  # the pixels the state keeps (resized if the bundles differ)
    if (
        kept is not None
    ):  # on the server already: not to be sent again as this device's support images
        home.outbox().mark_shared(kept, [name] * len(kept))
    home.save(clf)
    return {"name": name, "images": len(imgs), "classes": len(clf.classes)}
