"""HTTP clients, sharing one TLS context per process.

httpx builds a TLS context for every client it creates and loads the whole CA bundle into it from
disk each time (30-80 ms here), even when the client only ever speaks plain HTTP. A promotion makes
a dozen short-lived clients (green's start-up health polls, the smoke tests, the stability watch), so
the context is built once, the way httpx itself would build it (``SSL_CERT_FILE``/``SSL_CERT_DIR``
honoured, else certifi's bundle), and every client shares it: verification stays on.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context(verify=True, trust_env=True)


def client(**kwargs: Any) -> httpx.Client:
    """``httpx.Client(**kwargs)`` with the shared TLS context."""
    return httpx.Client(verify=tls_context(), **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    """One GET, like ``httpx.get``, with the shared TLS context."""
    timeout = kwargs.pop("timeout", 5.0)
    with client(timeout=timeout) as c:
        return c.get(url, **kwargs)
