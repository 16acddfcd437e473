"""The fleet HTTP API (FastAPI); docs/fleet.md lists it.

Every endpoint but ``/v1/health`` needs ``Authorization: Bearer <device token>`` (401 unknown, 403
revoked). Request bodies are read up to ``max_body`` bytes (413 beyond) and parsed off the event loop.
A client's mistake is a 4xx naming the field; a full disk is a 507, a database that cannot be written a
503 (both with ``Retry-After``): never a 500. Blobs are looked up by a
sha256 that must belong to a published release: a client never names a path, and uploads are never served.
"""

import asyncio
import json
import sqlite3
from typing import Optional

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from metalite.runtime.sync.release import is_sha256
from metalite.runtime.version import __version__

from . import classes, devices, examples, releases
from .errors import FleetError, RequestRefused


def _device_auth(root):
    """The dependency that turns ``Authorization: Bearer <token>`` into the device row (401/403 otherwise)."""

    def device(authorization: Optional[str] = Header(None)):
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        dev = devices.authenticate(root, authorization[len("Bearer ") :].strip())
        if dev is None:
            raise HTTPException(401, "unknown device token", headers={"WWW-Authenticate": "Bearer"})
        if dev["revoked"] is not None:
            raise HTTPException(403, f"the token of device {dev['name']!r} was revoked")
        return dev

    return device


def _parse(data: bytes) -> dict:
    """The JSON object in ``data`` (run in a worker thread: a 4 MiB body never holds up the event loop)."""
    try:
        body = json.loads(data)
    except RecursionError:
        raise HTTPException(400, "request body is nested too deeply") from None
    except (
        UnicodeDecodeError,
        ValueError,
    ):  # ValueError also for an integer of more than 4300 digits
        raise HTTPException(400, "request body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(422, "request body must be a JSON object")
    return body


def _json_body(max_body: int, body_timeout: float):
    """The dependency that reads a JSON object body of at most ``max_body`` bytes within ``body_timeout``
    seconds (413/408/400/422 otherwise)."""

    async def read(request: Request) -> bytes:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_body:
                raise HTTPException(413, f"request body larger than {max_body} bytes")
        return bytes(data)

    async def json_body(request: Request):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            raise HTTPException(413, f"request body larger than {max_body} bytes")
        try:
            data = await asyncio.wait_for(read(request), body_timeout)
        except asyncio.TimeoutError:
            raise HTTPException(
                408, f"request body not received within {body_timeout:g} s"
            ) from None
        return await run_in_threadpool(_parse, data)

    return json_body


def _storage_error(request: Request, exc: sqlite3.Error):
    """A database error while answering: the disk is full (507) or the database busy or read-only (503),
    one line with ``Retry-After``; the transaction was rolled back, so nothing is half-stored."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "full" in text:
        status, detail = 507, "the server's disk is full; nothing was stored, try again later"
    else:
        status, detail = (
            503,
            f"the server's database cannot be written now ({text}); try again later",
        )
    return JSONResponse({"detail": detail}, status_code=status, headers={"Retry-After": "600"})


def _refused(request: Request, exc: RequestRefused):
    return JSONResponse({"detail": str(exc)}, status_code=exc.status)


def _fleet_error(request: Request, exc: FleetError):
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "600"})


def create_app(root, max_body: int = 4 << 20, body_timeout: float = 60.0):
    """The ASGI app serving the fleet at ``root`` (a ``FleetRoot``)."""
    app = FastAPI(title="metalite fleet", version=__version__, docs_url=None, redoc_url=None)
    app.add_exception_handler(RequestRefused, _refused)
    app.add_exception_handler(sqlite3.Error, _storage_error)
    app.add_exception_handler(
        FleetError, _fleet_error
    )  # the database cannot be opened (FleetRoot.db)
    device, json_body = _device_auth(root), _json_body(max_body, body_timeout)

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
            raise HTTPException(422, 'expected {"examples": [...]}')
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

    @app.post("/v1/classes", status_code=201)
    def share_class(dev=Depends(device), body=Depends(json_body)):
        return classes.share(
            root,
            dev["id"],
            body.get("name"),
            body.get("images"),
            body.get("version"),
            body.get("replace", False),
        )

    @app.get("/v1/classes")
    def list_classes(dev=Depends(device)):
        return {"classes": classes.listing(root)}

    @app.get("/v1/classes/{name:path}")  # a label may hold "/"
    def get_class(name: str, dev=Depends(device)):
        return classes.fetch(root, name)
