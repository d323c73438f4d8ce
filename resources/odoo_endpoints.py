"""The Odoo host's part of a deployment's database endpoint: its role on the server, its PgBouncer process.

``LocalOdooHost`` mixes this in; ``db_endpoint.py`` says why every deployment has them. A deployment with
no ``db_role`` (one recorded before endpoints existed) is served as before: its Odoo connects to the
server's DSN under the physical database name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from resources import db_endpoint, redaction, secrets
from resources.db_endpoint import Endpoint
from resources.ops_db.records import DeploymentRecord

# Relations whose owner the deployment's role takes over (tables, partitions, views, materialized views,
# foreign tables, and sequences that no column owns: those follow their table).
_TRANSFER_OWNERSHIP = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.oid::regclass AS obj, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND (c.relkind IN ('r', 'p', 'v', 'm', 'f') OR (c.relkind = 'S' AND NOT EXISTS (
             SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))))
  LOOP
    EXECUTE format('ALTER TABLE %s OWNER TO %I', r.obj, {role});
  END LOOP;
END $$
"""


class DeploymentEndpoints:
    """Mixin of ``LocalOdooHost``: roles and PgBouncers of deployments (it supplies the fields below)."""

    if TYPE_CHECKING:
        run_dir: str
        role_key_ref: str
        pgbouncer_bin: str
        endpoint_os_user: str

        def connect(self, dsn_ref: str, db: str, autocommit: bool = False,
                    retry: bool = True) -> AbstractContextManager[psycopg.Connection[Any]]: ...

    def _role_key(self) -> str:
        key = secrets.resolve(self.role_key_ref)
        redaction.register_secret(key)
        return key

    def role_password(self, role: str) -> str:
        password = db_endpoint.role_password(self._role_key(), role)
        redaction.register_secret(password)
        return password

    def endpoint_verifier(self, role: str) -> str:
        """The SCRAM verifier a deployment's PgBouncer checks its role's password against (a PgBouncer on a
        process host is given it in its auth file, as the local one is)."""
        return self._verifier(role)

    def _verifier(self, role: str) -> str:
        key = self._role_key()
        return db_endpoint.scram_verifier(self.role_password(role), db_endpoint.role_salt(key, role))

    # -- the role ------------------------------------------------------------------------------------
    def grant_database_to_role(self, dsn_ref: str, db: str, role: str) -> None:
        """Create (or update) the deployment's role and give it its database and nothing else: LOGIN without
        any superpower, CONNECT on ``db`` only (PUBLIC's CONNECT revoked), the database and its relations
        owned by it (Odoo updates its own schema when modules are upgraded)."""
        verifier = self._verifier(role)
        ident = sql.Identifier(role)
        with self.connect(dsn_ref, "postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = sql.SQL("ALTER") if exists else sql.SQL("CREATE")
            conn.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}")
                         .format(verb, ident, sql.Literal(verifier)))
            database = sql.Identifier(db)
            conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(database))
            conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(database, ident))
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, ident))
        with self.connect(dsn_ref, db, autocommit=True) as conn:
            conn.execute(sql.SQL(_TRANSFER_OWNERSHIP).format(role=sql.Literal(role)))

    def role_exists(self, dsn_ref: str, role: str) -> bool:
        with self.connect(dsn_ref, "postgres", retry=False) as conn:
            return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None

    def server_rights(self, dsn_ref: str) -> tuple[str, bool]:
        """The DSN's user, and whether it may create databases and roles (every restore and deployment needs both;
        a superuser may)."""
        with self.connect(dsn_ref, "postgres", retry=False) as conn:
            row = conn.execute("SELECT rolname, rolsuper OR (rolcreatedb AND rolcreaterole) FROM pg_roles"
                               " WHERE rolname = current_user").fetchone()
        assert row is not None
        return str(row[0]), bool(row[1])

    def drop_role(self, dsn_ref: str, role: str | None) -> None:
        """Drop a deployment's role once its database is gone (it owns nothing else)."""
        if not role:
            return
        with self.connect(dsn_ref, "postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

    # -- the PgBouncer -------------------------------------------------------------------------------
    def endpoint_dir(self, deployment_id: str) -> Path:
        return Path(self.run_dir) / "endpoints" / deployment_id

    def endpoint(self, dep: DeploymentRecord) -> Endpoint | None:
        """How ``dep``'s Odoo reaches its database; None for a deployment without a role (legacy)."""
        if not dep.db_role or not dep.endpoint_port:
            return None
        return Endpoint(host="127.0.0.1", port=dep.endpoint_port, user=dep.db_role,
                        password=self.role_password(dep.db_role), dbname=dep.served_db)

    def start_endpoint(self, dsn_ref: str, dep: DeploymentRecord) -> int:
        """Start ``dep``'s PgBouncer (its database under the environment's name, and nothing else); its pid."""
        assert dep.db_role and dep.endpoint_port, f"{dep.deployment_id} has no database endpoint"
        # Where the environment's server is, as libpq found it (a DSN may leave host or port to PGHOST/PGPORT or
        # to libpq's defaults): never an assumed 5432, which may be another server, the ops database's say.
        with self.connect(dsn_ref, "postgres") as conn:
            server_host, server_port = conn.info.host, str(conn.info.port)
        folder = self.endpoint_dir(dep.deployment_id)
        os_user = self.endpoint_os_user if os.geteuid() == 0 else None
        config = db_endpoint.write_config(folder, dep.endpoint_port, dep.served_db, dep.db_name, server_host,
                                          server_port, dep.db_role, self._verifier(dep.db_role), os_user)
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        pid = db_endpoint.start(self.pgbouncer_bin, config, Path(self.run_dir) / f"{dep.deployment_id}.pgbouncer.log")
        db_endpoint.wait_listening("127.0.0.1", dep.endpoint_port, pid)
        return pid

    def stop_endpoint(self, pid: int | None, started: int | None) -> str | None:
        """Stop a PgBouncer read from the records, only if it is still the one started then (else: why not)."""
        return db_endpoint.stop_recorded(pid, started)

    @staticmethod
    def process_started(pid: int) -> int | None:
        """The start time that, recorded with ``pid``, lets a later stop prove it is the same process."""
        return db_endpoint.process_started(pid)

    def processes_of(self, pid: int | None) -> Iterator[int]:
        """Every live process of the group ``pid`` leads (a prefork Odoo: master, workers, its websocket server)."""
        if not pid:
            return
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] not in ("Z", "X") and int(fields[2]) == pid:  # state, ppid, pgrp
                yield int(entry.name)
