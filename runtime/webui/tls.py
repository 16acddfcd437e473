"""https for the device page: browsers give a page the camera only on https or localhost.

``tls_context(cert, key)`` loads a certificate; ``self_signed(folder, names)`` makes one once with the
``openssl`` command (on Raspberry Pi OS and Debian by default) and reuses it, so a phone accepts the same
certificate warning only once.
"""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess
from pathlib import Path

from metalite.common.errors import MetaliteError


class WebError(MetaliteError, ValueError):
    """A server setting the device page cannot use (a TLS certificate that does not load or cannot be made)."""


def tls_context(cert, key) -> ssl.SSLContext:
    """A server TLS context from a certificate and key file (PEM)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise WebError(f"cannot load the TLS certificate {cert} / key {key}: {e}") from None
    return ctx


def self_signed(folder, names) -> tuple:
    """``(cert, key)`` paths of a self-signed certificate in ``folder`` for ``names`` (host names or
    addresses), made with ``openssl`` if not there yet (valid 825 days, RSA 2048). Delete the folder to make
    a new one (after the device's address changed)."""
    folder = Path(folder)
    cert, key = folder / "cert.pem", folder / "key.pem"
    if cert.is_file() and key.is_file():
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        raise WebError(
            "--self-signed needs the openssl command (apt install openssl), or pass --tls-cert/--tls-key"
        )
    folder.mkdir(parents=True, exist_ok=True)
    names = [n for n in dict.fromkeys(names) if n and n not in ("0.0.0.0", "::")]
    alt = ",".join(f"IP:{n.strip('[]')}" if _is_ip(n) else f"DNS:{n}" for n in names)
    tmp_cert, tmp_key = folder / ".cert.pem.tmp", folder / ".key.pem.tmp"
    cmd = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "825",
        "-subj",
        "/CN=metalite device",
        "-addext",
        f"subjectAltName={alt}",
        "-keyout",
        str(tmp_key),
        "-out",
        str(tmp_cert),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise WebError(f"openssl could not make a certificate: {last[:200]}")
    tmp_key.chmod(0o600)
    tmp_key.replace(key)
    tmp_cert.replace(cert)
    return cert, key


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False
