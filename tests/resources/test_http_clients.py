"""Every HTTP client shares one TLS context, built once, with verification on."""

from __future__ import annotations

import ssl

import pytest

from resources import http_clients

pytestmark = pytest.mark.unit  # pure logic: `make unit` (no PostgreSQL, no process)


def test_clients_share_one_verifying_tls_context() -> None:
    context = http_clients.tls_context()
    assert http_clients.tls_context() is context  # built once per process
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs() or context.cert_store_stats()["x509_ca"] > 0  # a CA bundle is loaded
    with http_clients.client(timeout=1.0) as one, http_clients.client(timeout=1.0) as two:
        for c in (one, two):
            pool = c._transport._pool  # type: ignore[attr-defined]
            assert pool._ssl_context is context
