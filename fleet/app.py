"""The fleet HTTP API (FastAPI); docs/fleet.md lists it.

Every endpoint but ``/v1/health`` needs ``Authorization: Bearer <device token>`` (401 unknown, 403
revoked). Request bodies are read up to ``max_body`` bytes (413 beyond). Blobs are looked up by a
sha256 that must belong to a published release: a client never names a path, and uploads are never served.
"""
import json
from typing import Optional

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import FileResponse

from metalite.runtime.version import __version__
from metalite.runtime.sync.release import is_sha256

from . import classes, devices, examples, releases


def _device_auth(root):
    """The dependency that turns ``Authorization: Bearer <token>`` into the device row (401/403 otherwise)."""
    def device(authorization: Optional[str] = Header(None)):
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        dev = devices.authenticate(root, authorization[len("Bearer "):].strip())
        if dev is None:
            raise HTTPException(401, "unknown device token", headers={"WWW-Authenticate": "Bearer"})
        if dev["revoked"] is not None:
            raise HTTPException(403, f"the token of device {dev['name']!r} was revoked")
        return dev
    return device


def _json_body(max_body: int):
    """The dependency that reads a JSON object body of at most ``max_body`` bytes (413/400/422 otherwise)."""
    async def json_body(request: Request):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            raise HTTPException(413, f"request body larger than {max_body} bytes")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_body:
                raise HTTPException(413, f"request body larger than {max_body} bytes")
        try:
            body = json.loads(bytes(data))
        except (UnicodeDecodeError, ValueError):
            raise HTTPException(400, "request body is not JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(422, "request body must be a JSON object")
        return body
    return json_body


def create_app(root, max_body: int = 4 << 20):
    """The ASGI app serving the fleet at ``root`` (a ``FleetRoot``)."""
    app = FastAPI(title="metalite fleet", version=__version__, docs_url=None, redoc_url=None)
    device, json_body = _device_auth(root), _json_body(max_body)

    @app.get("/v1/health")
    def health():
        offer = releases.latest_offer(root)
        return {"ok": True, "public_key": root.public_key(), "latest": offer and offer["version"]}

    @app.get("/v1/releases/latest")
    def latest(dev=Depends(device)):
        offer = releases.latest_offer(root)
        if offer is None:
            raise HTTPException(404, "no release published yet")
        return offer

    @app.get("/v1/blobs/{sha256}")
    def blob(sha256: str, dev=Depends(device)):
        if not is_sha256(sha256) or not releases.is_release_blob(root, sha256):
            raise HTTPException(404, "no such release file")
        path = root.blobs.path(sha256)
        if not path.is_file():
            raise HTTPException(410, "release file missing from the blob store")
        return FileResponse(path, media_type="application/octet-stream")

    @app.post("/v1/examples")
    def upload(dev=Depends(device), body=Depends(json_body)):
        batch = body.get("examples")
        if not isinstance(batch, list):
            raise HTTPException(422, "expected {\"examples\": [...]}")
        if len(batch) > examples.MAX_BATCH:
            raise HTTPException(413, f"at most {examples.MAX_BATCH} examples per request")
        return examples.ingest(root, dev["id"], batch)

    @app.post("/v1/report")
    def report(dev=Depends(device), body=Depends(json_body)):
        devices.record_report(root, dev["id"], body)
        return {"ok": True}

    _class_routes(app, root, device, json_body)
    return app


def _class_routes(app, root, device, json_body) -> None:
    """The class library: share a class, list the shared ones, fetch one (``fleet.classes``)."""

    def refused(e: classes.ClassRefused):
        return HTTPException(e.status, str(e))

    @app.post("/v1/classes", status_code=201)
    def share_class(dev=Depends(device), body=Depends(json_body)):
        try:
            return classes.share(root, dev["id"], body.get("name"), body.get("images"), body.get("version"),
                                 bool(body.get("replace", False)))
        except classes.ClassRefused as e:
            raise refused(e) from None

    @app.get("/v1/classes")
    def list_classes(dev=Depends(device)):
        return {"classes": classes.listing(root)}

    @app.get("/v1/classes/{name:path}")  # a label may hold "/"
    def get_class(name: str, dev=Depends(device)):
        try:
            return classes.fetch(root, name)
        except classes.ClassRefused as e:
            raise refused(e) from None
