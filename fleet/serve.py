"""Run the fleet server: open (or create) the root and its signing key, bind, serve with uvicorn.

``--port 0`` binds a free port; the address is printed either way (tests and scripts read that line).
A connection must send each request's headers within ``protocol.HEADER_TIMEOUT`` s and its body within
60 s; up to ``MAX_CONNECTIONS`` are served at once (docs/fleet.md, "Load").
"""

from __future__ import annotations

import socket

from .app import create_app
from .protocol import HEADER_TIMEOUT, DeadlineH11Protocol
from .root import FleetRoot

MAX_CONNECTIONS = (
    4096  # open connections served at once; idle ones are closed after protocol.HEADER_TIMEOUT
)
FILE_RESERVE = 128  # file descriptors kept for the database, blobs and the listening socket


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def connection_limit(most: int = MAX_CONNECTIONS) -> int:
    """Connections served at once (more get 503): ``most``, or fewer if the open-file limit (raised to its hard
    limit first) cannot hold them with room for the database and blobs."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            want = most + FILE_RESERVE if hard == resource.RLIM_INFINITY else hard
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
            soft = max(soft, want)
    except (ImportError, ValueError, OSError):
        return min(most, 512)
    return max(16, min(most, soft - FILE_RESERVE))


def serve(
    root_dir,
    host: str = "127.0.0.1",
    port: int = 8765,
    max_body: int = 4 << 20,
    say=print,
    on_start=None,
    header_timeout: float = HEADER_TIMEOUT,
) -> None:
    """Serve the fleet at ``root_dir`` until interrupted (SIGINT/SIGTERM stop it cleanly); ``on_start()`` is
    called once the root exists and the socket is bound (e.g. to start scheduled updates)."""
    import uvicorn

    root = FleetRoot(root_dir, create=True)  # refuses to create a root a git work tree would commit
    if root.exposed_in is not None:
        say(
            f"WARNING: {root.path} is inside the git work tree {root.exposed_in} and not ignored: `git add` would "
            "commit the private signing key and the uploaded images; move the root out (e.g. ~/metalite-fleet)"
        )
    _, public, created = root.signing_key()
    say(f"{'created' if created else 'using'} signing key {root.path / 'signing_key.pem'}")
    say(f"public key: {public}")
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    say(f"serving {root.path} on http://{shown}:{sock.getsockname()[1]}")
    if on_start is not None:
        on_start()
    protocol = type(
        "FleetH11Protocol", (DeadlineH11Protocol,), {"header_timeout": float(header_timeout)}
    )
    config = uvicorn.Config(
        create_app(root, max_body),
        log_level="warning",
        access_log=False,
        http=protocol,
        timeout_keep_alive=5,
        limit_concurrency=connection_limit(),
    )
    uvicorn.Server(config).run(sockets=[sock])
