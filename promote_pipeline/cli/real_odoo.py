"""The sandbox over a real Odoo instead of the stand-in, for checking the promoter against the real thing.

Nothing here installs Odoo: it is given an installed one (``odoo-bin``, its addons path and the interpreter
that has its requirements) and runs it the way an operator would. Production is made by ``odoo-bin -i`` as a
role made for that purpose only (Odoo refuses the ``postgres`` role, and a production never runs as a
superuser), then handed to the deployment's own role like every other database; staging is a copy of it,
neutralized by ``odoo-bin neutralize`` as staging's own role; every server runs in prefork mode, so the bus
is served by a separate websocket process on ``--gevent-port``, as in production.

Used only when asked: ``RealOdoo.from_env()`` reads the three variables below, and the opt-in test
(``tests/real_odoo/``) is skipped without them.
"""

from __future__ import annotations

import os
import secrets as pysecrets
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from passlib.hash import pbkdf2_sha512
from psycopg import sql

from promote_pipeline.cli.sandbox import ADMIN_REF, DSN_REF, Sandbox
from resources import secrets
from resources.odoo_host import LocalOdooHost
from resources.ops_db import DeploymentRecord

BIN_VAR, ADDONS_VAR, PYTHON_VAR = "PROMOTE_REAL_ODOO_BIN", "PROMOTE_REAL_ODOO_ADDONS", "PROMOTE_REAL_ODOO_PYTHON"
# What production has installed: the web client, the bus (websockets) and what they pull in.
MODULES = "base,web,bus,base_setup,web_tour"
INIT_SECONDS, NEUTRALIZE_SECONDS = 600, 180
NOT_NAMED = (f"no installed Odoo named: set {BIN_VAR} (odoo-bin), {ADDONS_VAR} (its addons path) and {PYTHON_VAR}"
             " (the interpreter with Odoo's requirements) to check the promoter against a real Odoo")


class OdooBinFailed(RuntimeError):
    """odoo-bin exited with an error or ran out of time; the message ends with its log's last lines."""


@dataclass(frozen=True)
class RealOdoo:
    """An installed Odoo: ``bin`` (odoo-bin), ``addons`` (its addons path), ``python`` (with its requirements)."""

    bin: str
    addons: str
    python: str
    workers: int = 2

    @classmethod
    def from_env(cls) -> RealOdoo | None:
        """From PROMOTE_REAL_ODOO_BIN, _ADDONS and _PYTHON; None unless all three are set."""
        odoo_bin, addons, python = (os.environ.get(var, "") for var in (BIN_VAR, ADDONS_VAR, PYTHON_VAR))
        return cls(bin=odoo_bin, addons=addons, python=python) if odoo_bin and addons and python else None

    def argv(self, command: str, db: str, host: str, port: str, user: str) -> list[str]:
        """``odoo-bin [COMMAND]`` on database ``db`` of the server ``host:port`` as ``user`` (its password comes
        in PGPASSWORD); COMMAND "" is the server."""
        return [self.python, self.bin, *([command] if command else []), "--addons-path", self.addons, "-d", db,
                "--db_host", host, "--db_port", port, "--db_user", user]

    def command_template(self) -> str:
        """Odoo's command template for the promoter: prefork (HTTP workers, a cron worker, and the websocket
        server on ``--gevent-port``, which the router sends ``/websocket`` to), behind the router
        (``--proxy-mode``), without the database manager; the password comes in PGPASSWORD."""
        q = shlex.quote
        return (f"{q(self.python)} {q(self.bin)} --addons-path {q(self.addons)} -d {{db}} --db_host {{db_host}}"
                " --db_port {db_port} --db_user {db_user} --data-dir {data_dir} --http-interface 127.0.0.1"
                " --http-port {http_port} --gevent-port {websocket_port}"
                f" --workers {self.workers} --max-cron-threads 1 --proxy-mode --no-database-list")

    def run(self, what: str, argv: list[str], env: dict[str, str], log: Path, timeout: float) -> None:
        """``argv`` to its end, in its own process group (killed whole if it overruns ``timeout``)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise OdooBinFailed(f"odoo-bin {what} did not finish within {timeout:.0f}s; {_tail(log)}") from None
        if code != 0:
            raise OdooBinFailed(f"odoo-bin {what} exited with {code}; {_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    return "log:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class RealOdooSandbox(Sandbox):
    """A ``Sandbox`` whose staging and production are a real Odoo's (``real_odoo``); everything else as there."""

    real_odoo: RealOdoo | None = None

    @property
    def odoo(self) -> RealOdoo:
        if self.real_odoo is None:
            raise ValueError("RealOdooSandbox needs real_odoo (RealOdoo.from_env() reads it from the environment)")
        return self.real_odoo

    def odoo_command(self) -> str:
        return self.odoo.command_template()

    def _server(self) -> tuple[str, str]:
        params = psycopg.conninfo.conninfo_to_dict(secrets.resolve(DSN_REF))
        return str(params.get("host") or "127.0.0.1"), str(params.get("port") or "5432")

    def _odoo_env(self, password: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return {**env, "PGPASSWORD": password}  # never in argv: it would show in ps

    def _make_production(self, host: LocalOdooHost, prod: DeploymentRecord) -> None:
        """``odoo-bin -i`` into a new database as a role made for it, the admin's password set to the sandbox's
        generated one; the role is gone afterwards (what it owned is the superuser's until ``give_database``
        hands the database to the deployment's role), and so is the database if anything failed."""
        role, password = f"{prod.db_name}_init", pysecrets.token_urlsafe(18)
        server_host, server_port = self._server()
        host.drop_database(DSN_REF, prod.db_name)
        try:
            _create_for(host, prod.db_name, role, password)
            self.odoo.run("-i", [*self.odoo.argv("", prod.db_name, server_host, server_port, role),
                           "--data-dir", prod.data_dir, "-i", MODULES, "--without-demo=all", "--stop-after-init",
                           "--no-http"],
                          self._odoo_env(password), Path(host.run_dir) / f"{prod.deployment_id}.init.log",
                          INIT_SECONDS)
            with host.connect(DSN_REF, prod.db_name) as conn:
                _set_admin_password(conn, secrets.resolve(ADMIN_REF), self.pbkdf2_rounds)
        except BaseException:
            _drop_role(host, prod.db_name, role)
            host.drop_database(DSN_REF, prod.db_name)
            raise
        _drop_role(host, prod.db_name, role)

    def _neutralize(self, host: LocalOdooHost, staging: DeploymentRecord) -> None:
        """``odoo-bin neutralize`` as staging's own role, on its physical database."""
        assert staging.db_role, "a seed deployment has its own role"
        server_host, server_port = self._server()
        argv = self.odoo.argv("neutralize", staging.db_name, server_host, server_port, staging.db_role)
        self.odoo.run("neutralize", argv, self._odoo_env(host.role_password(staging.db_role)),
                      Path(host.run_dir) / f"{staging.deployment_id}.neutralize.log", NEUTRALIZE_SECONDS)

    def _add_staging_contacts(self, conn: psycopg.Connection[Any]) -> None:
        """Staging's own contacts, with the columns Odoo's list views and searches rely on (active, type, the
        stored display and commercial fields) filled as the ORM would."""
        conn.execute(
            "INSERT INTO res_partner (name, complete_name, email, company_id, active, type, is_company,"
            " create_uid, write_uid, create_date, write_date)"
            " SELECT 'Staging contact ' || n, 'Staging contact ' || n, 'staging' || n || '@example.com', 1, true,"
            " 'contact', false, 1, 1, now() at time zone 'UTC', now() at time zone 'UTC'"
            " FROM generate_series(1, 25) AS n")
        conn.execute("UPDATE res_partner SET commercial_partner_id = id"
                     " WHERE commercial_partner_id IS NULL AND name LIKE 'Staging contact %'")


def _create_for(host: LocalOdooHost, db: str, role: str, password: str) -> None:
    """The role (no superpower, not even CREATEDB) and its empty database, made as Odoo's own database creation
    makes one (``odoo/service/db.py``: unicode, C collation from template0, pg_trgm)."""
    with host.connect(DSN_REF, "postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}")
                     .format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'unicode' LC_COLLATE 'C' TEMPLATE template0")
                     .format(sql.Identifier(db), sql.Identifier(role)))
    with host.connect(DSN_REF, db, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")


def _set_admin_password(conn: psycopg.Connection[Any], password: str, rounds: int) -> None:
    """The admin's password, hashed as Odoo hashes it (passlib's pbkdf2_sha512, ``res_users.password``)."""
    hashed = pbkdf2_sha512.using(rounds=rounds).hash(password)
    if conn.execute("UPDATE res_users SET password = %s WHERE login = 'admin'", (hashed,)).rowcount != 1:
        raise RuntimeError("the new production has no 'admin' user")


def _drop_role(host: LocalOdooHost, db: str, role: str) -> None:
    """What ``role`` owns in ``db`` (the database included) to the superuser, then the role itself."""
    with host.connect(DSN_REF, "postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            return
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is not None
    if exists:
        with host.connect(DSN_REF, db, autocommit=True) as conn:
            conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with host.connect(DSN_REF, "postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
