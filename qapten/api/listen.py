"""The listening socket of a server, bound before anything starts.

Binding first turns "address already in use" into one clear line (uvicorn would log it and exit
from inside its own task), and it happens before a database or a model is touched.
"""

from __future__ import annotations

import socket

from qapten.errors import ConfigurationError


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (`host`, `port`), ready to hand to ``uvicorn.Server.serve``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once after a stop
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        msg = f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port)"
        raise ConfigurationError(msg) from None
    sock.set_inheritable(True)
    return sock
