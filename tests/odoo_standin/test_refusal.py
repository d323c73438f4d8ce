"""``serve`` refuses the ``postgres`` role as ``odoo-bin`` does (odoo/cli/server.py ``check_postgres_user``)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from .conftest import ALLOW_SUPERUSER, REPO, SERVER, Seeded, Server, free_port

MESSAGE = "Using the database user 'postgres' is a security risk, aborting."


def serve(seeded: Seeded, dsn: str, *extra: str, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess[str]:
    args = ["serve", "--db", seeded.db, "--data-dir", str(seeded.data_dir), "--port", str(free_port()),
            "--dsn", dsn, *extra]
    return subprocess.run([sys.executable, "-m", "odoo_standin", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=30, env=env or dict(os.environ))


def test_the_dsn_user_postgres_is_refused(seeded: Seeded) -> None:
    result = serve(seeded, f"{SERVER} user=postgres")
    assert (result.returncode, result.stderr, result.stdout) == (1, MESSAGE, "")


def test_pguser_postgres_is_refused_when_the_dsn_names_no_user(seeded: Seeded) -> None:
    env = {**os.environ, "PGUSER": "postgres"}
    result = serve(seeded, SERVER, env=env)
    assert (result.returncode, result.stderr) == (1, MESSAGE)
    assert serve(seeded, SERVER, "--workers", "2", env=env).returncode == 1


def test_other_roles_are_not_refused(seeded: Seeded) -> None:
    """Only the literal name counts, as in Odoo: another role (superuser or not) starts."""
    srv = Server(seeded, None, f"{SERVER} user=odoo_deploy_role")
    srv.args.remove(ALLOW_SUPERUSER)
    srv.start()
    try:
        assert httpx.get(f"{srv.url}/web/health", timeout=60).json() == {"status": "pass"}
    finally:
        srv.stop()


def test_the_explicit_test_flag_lets_postgres_through(make_server) -> None:
    srv = make_server()  # the fixtures pass --allow-superuser-role-for-tests
    assert ALLOW_SUPERUSER in srv.args
    assert httpx.get(f"{srv.url}/web/health", timeout=60).status_code == 200
