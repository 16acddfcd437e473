"""metalite.runtime.sync: a device's link to its fleet server (``metalite serve``), standard library only.

    from metalite.runtime.sync import DeviceHome, sync
    home = DeviceHome("/var/lib/metalite")
    sync(home, "http://server:8765", token, parse_public_key(KEY))   # install v1 (and later updates)
    install_bundle(home, "models/omniglot")  # ... or, without a fleet, a bundle from disk (install.py)
    clf = home.classifier()                  # a ReportingClassifier: unsure predictions go to the outbox
    clf.fit(images, labels); home.save(clf)
    clf.predict(query); clf.correct(image, "right label"); home.save(clf)
    sync(home, ...)                          # upload the outbox, switch to a newer signed bundle
    share_class(home, FleetClient(server, token), "cat")   # the class library (classes.py)

Signatures are checked with ``cryptography`` (extra ``sync``), imported only then. docs/fleet.md has the
flow, the home layout, the HTTP API and the security model.
"""

from .agent import SyncResult, sync, upload_outbox
from .classes import fetch_class, pull_class, share_class, shared_classes
from .client import FleetClient
from .errors import (
    BadAnswerError,
    ServerBusyError,
    ServerRefusedError,
    ServerUnreachableError,
    SyncError,
    UpdateRefusedError,
)
from .health import support_accuracy
from .home import DeviceHome
from .install import install_bundle
from .outbox import Outbox
from .release import parse_public_key, verify_release
from .reporting import ReportingClassifier
from .update import UpdateResult, apply_offer

__all__ = [
    "sync",
    "SyncResult",
    "upload_outbox",
    "share_class",
    "shared_classes",
    "fetch_class",
    "pull_class",
    "FleetClient",
    "DeviceHome",
    "Outbox",
    "ReportingClassifier",
    "apply_offer",
    "UpdateResult",
    "install_bundle",
    "support_accuracy",
    "parse_public_key",
    "verify_release",
    "SyncError",
    "ServerUnreachableError",
    "ServerRefusedError",
    "ServerBusyError",
    "BadAnswerError",
    "UpdateRefusedError",
]
