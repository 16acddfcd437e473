"""metalite.fleet: the back end devices sync with (``metalite serve``, ``metalite fleet ...``).

Holds the fleet's devices, signed bundle versions and the examples devices upload, in one root
directory (SQLite + content-addressed blobs + an Ed25519 key). Imports ``metalite.runtime`` (bundle
checks, the release format); the runtime never imports this package. FastAPI/uvicorn (extra ``serve``)
are imported only by ``app``/``serve``. docs/fleet.md describes the flow, layout, API and security model.
"""

from .devices import enroll, list_devices, revoke
from .errors import FleetError
from .examples import counts, iter_examples
from .releases import export_bundle, export_model, latest_offer, list_releases, publish, rollback
from .root import FleetRoot
from .status import status

__all__ = [
    "FleetRoot",
    "FleetError",
    "enroll",
    "revoke",
    "list_devices",
    "publish",
    "rollback",
    "latest_offer",
    "list_releases",
    "export_bundle",
    "export_model",
    "iter_examples",
    "counts",
    "status",
]
