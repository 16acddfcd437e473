"""A fleet learning alphabets the shipped ``models/omniglot`` never saw: the scenario of
``tests/scenarios/test_fleet_update_shipped.py`` and, at full scale, of ``scripts/fleet_update_study.py``.

Three devices sync the release and are each taught the same characters of two held-out alphabets (device k:
alphabets k and k+1, so every character is on two devices, as when a class is learnt in two places); their
users check predictions and correct the wrong ones, and the devices upload through a real ``metalite serve``:
the support images they were taught, the corrections, and the unsure predictions (unlabelled). Every
character's drawings are split by who drew them: the device that learns an alphabet first (k) is taught
``SUPPORT[0]``'s drawers and checks ``CHECKED[r][0]``'s in round r, the other one (k+1) ``SUPPORT[1]`` and
``CHECKED[r][1]``; the ``HELD`` drawers are never shown to a device nor uploaded, so accuracy before and after an
update is measured on drawings by people whose drawings of that character no update trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repo_paths import DATA, REPO

from metalite.runtime import FewShotClassifier
from metalite.runtime.sync import DeviceHome, sync

SHIPPED, SHIPPED_FLOAT = REPO / "models" / "omniglot", REPO / "models" / "float" / "omniglot"
FIXTURE = DATA / "omniglot_heldout"
DEVICE_ALPHABETS = (
    "Arcadian",
    "Early_Aramaic",
    "Sanskrit",
)  # test-split alphabets of models/omniglot
SUPPORT = (
    (1, 2),
    (3, 4),
)  # Omniglot drawer numbers (the DD of CCCC_DD.png): first device's, second's
CHECKED = (((5, 6, 7), (8, 9, 10)), ((11, 12), (13, 14)))  # per round
HELD = (15, 16, 17, 18, 19, 20)


@dataclass
class Device:
    """One device of the scenario: its home, token and the classes it was taught ({class index: drawer role
    0 or 1, the index into ``SUPPORT`` and ``CHECKED[r]``})."""

    name: str
    home: DeviceHome
    token: str
    classes: dict
    corrections: list = field(default_factory=list)  # per checking round


def assign(data, alphabets=DEVICE_ALPHABETS, characters: int = 12) -> list:
    """{class index: drawer role} per device: device k learns the first ``characters`` characters (by folder
    name) of alphabet k (role 0) and of alphabet k+1 (role 1)."""
    chars = {
        a: sorted((data.class_names[c], c) for c in range(data.num_classes) if data.groups[c] == a)
        for a in alphabets
    }
    for a, cs in chars.items():
        if len(cs) < characters:
            raise ValueError(f"{a}: {len(cs)} characters, the scenario needs {characters}")
    n = len(alphabets)
    return [
        {
            **{c: 0 for _, c in chars[alphabets[k]][:characters]},
            **{c: 1 for _, c in chars[alphabets[(k + 1) % n]][:characters]},
        }
        for k in range(n)
    ]


def rows(data, c: int, drawers) -> np.ndarray:
    """Image indices of class ``c`` drawn by ``drawers``."""
    idx = data.indices_of(c)
    return idx[np.isin(data.drawers[idx], drawers)]


def label(data, c: int) -> str:
    return data.class_names[c]


def start(fleet, url: str, key: bytes, data, classes_per_device: list, homes: Path) -> list:
    """Enroll the devices, let them take the release, teach each its classes from the ``SUPPORT`` drawers."""
    from metalite.fleet import enroll

    devices = []
    for k, classes in enumerate(classes_per_device):
        name = f"pi-{k}"
        dev = Device(name, DeviceHome(homes / name), enroll(fleet, name), classes)
        r = sync(dev.home, url, dev.token, key, delegate="cpu")
        if r.update is None or r.update.status != "switched":
            raise RuntimeError(f"{name} did not take the release: {r.update}")
        clf = dev.home.classifier(delegate="cpu")
        clf.fit(
            {
                label(data, c): data.images[rows(data, c, SUPPORT[role])]
                for c, role in classes.items()
            }
        )
        dev.home.save(clf)
        devices.append(dev)
    return devices


def check(dev: Device, data, rnd: int) -> int:
    """The user checks a prediction on each drawing of round ``rnd``'s drawers of every class (unsure ones go to
    the outbox) and corrects the wrong ones (a correction also teaches the class); returns how many were wrong."""
    clf = dev.home.classifier(delegate="cpu")
    wrong = 0
    for c, role in dev.classes.items():
        x = data.images[rows(data, c, CHECKED[rnd][role])]
        bad = [j for j, p in enumerate(clf.predict(x)) if p != label(data, c)]
        if bad:
            clf.correct(x[bad], label(data, c))
            wrong += len(bad)
    dev.home.save(clf)
    dev.corrections.append(wrong)
    return wrong


def held_correct(dev: Device, data) -> tuple:
    """(right, total) on the ``HELD`` drawings of the device's classes, with its running version and state
    (``FewShotClassifier.predict``: measuring puts nothing in the outbox)."""
    clf = dev.home.classifier(delegate="cpu")
    idx = np.concatenate([rows(data, c, HELD) for c in dev.classes])
    pred = FewShotClassifier.predict(clf, data.images[idx])
    return sum(p == data.class_names[int(data.labels[i])] for p, i in zip(pred, idx)), len(idx)


def held_data(data, classes):
    """The ``HELD`` drawings of ``classes`` as a FewShotData (episodes on drawings no one uploaded)."""
    from metalite.training.datasets import FewShotData

    sub = data.subset(classes)
    keep = np.isin(sub.drawers, HELD)
    return FewShotData(
        sub.images[keep], sub.labels[keep], sub.class_names, sub.groups, sub.spec, sub.drawers[keep]
    )


def sync_all(devices: list, url: str, key: bytes) -> list:
    return [sync(d.home, url, d.token, key, delegate="cpu") for d in devices]


def uploaded(fleet) -> dict:
    """{kind: examples the server stored}."""
    return {
        k: n for k, n in fleet.db().execute("SELECT kind, count(*) FROM examples GROUP BY kind")
    }
