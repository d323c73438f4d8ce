"""Which databases a stand-in opens, and how: any database, by name, through the DSN it was given.

Odoo has no fixed database per process. ``Registry(db)`` opens whatever database a request
names through the server's own connection parameters (``odoo/sql_db.py`` ``db_connect``: the
configured host, port and user, the database name replaced), and the RPC services
(``odoo/service/model.py``, ``common.py``) never apply the db filter. So :class:`Databases`
keeps a few idle connections per database name and opens a new one on demand; a database that
does not exist fails at once with PostgreSQL's own error, as ``psycopg2.connect`` does in Odoo.
A database without Odoo's tables fails when a model is looked up (``KeyError: 'res.users'``),
as an uninitialised registry does.

What the HTTP layer may serve is another matter, decided by :class:`DbSelection`, a copy of
``db_filter``/``db_list`` (``odoo/http.py``) and ``list_dbs`` (``odoo/service/db.py``):
with ``--db-filter`` a regular expression (``%h`` the request's host, ``%d`` its first label)
matched against the databases the role owns; without it, the ``--db`` list.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]
MAX_IDLE = 8
# Odoo's list_dbs leaves out the maintenance database and the template new databases are made from.
_NOT_LISTED = ("postgres", "template0")
_LIST_SQL = """
    SELECT datname FROM pg_database
     WHERE datdba = (SELECT usesysid FROM pg_user WHERE usename = current_user)
       AND NOT datistemplate AND datallowconn AND datname <> ALL(%s)
     ORDER BY datname
"""


class Databases:
    """Connections to any database of the server, a few kept idle per database name.

    Connections are in autocommit mode; :meth:`cursor` wraps each use in one transaction, committed
    when the block ends and rolled back if it raises, as Odoo commits a request's cursor. Each transaction
    begins READ WRITE explicitly, as Odoo 18's do.
    """

    def __init__(self, dsn: str, max_idle: int = MAX_IDLE) -> None:
        self.dsn = dsn
        self.max_idle = max_idle
        self._idle: dict[str, list[Conn]] = {}
        self._initialised: set[str] = set()
        self._lock = threading.Lock()

    def conninfo(self, db: str) -> str:
        return make_conninfo(self.dsn, dbname=db)

    @contextmanager
    def cursor(self, db: str) -> Iterator[Conn]:
        """A connection to ``db`` inside a transaction; raises ``psycopg.OperationalError`` if it can't open."""
        with self.transaction(db, self.borrow(db)) as conn:
            yield conn

    @contextmanager
    def transaction(self, db: str, conn: Conn) -> Iterator[Conn]:
        """One transaction on a borrowed connection, which is given back (or closed) afterwards."""
        try:
            with conn.transaction():
                yield conn
        finally:
            self._give_back(db, conn)

    def borrow(self, db: str) -> Conn:
        """An open connection to ``db``: opening it is where a missing or uninitialised database fails."""
        while True:
            with self._lock:
                idle = self._idle.get(db)
                conn = idle.pop() if idle else None
            if conn is None:
                break
            if _usable(conn):
                return conn
            conn.close()
        conn = psycopg.connect(self.conninfo(db), autocommit=True)
        # As Odoo 18 does (sql_db.py: ``set_session(readonly=pool.readonly)``, False for its primary pool): every
        # transaction begins READ WRITE, whatever the database's default_transaction_read_only says.
        conn.read_only = False
        if db not in self._initialised:
            self._check_initialised(db, conn)
        return conn

    def _check_initialised(self, db: str, conn: Conn) -> None:
        """An Odoo registry needs ``ir_module_module``; without it every model lookup fails."""
        row = conn.execute("SELECT to_regclass('ir_module_module') IS NOT NULL").fetchone()
        if not (row and row[0]):
            conn.close()
            log.error("Database %s not initialized, you can force it with `-i base`", db)
            raise KeyError("res.users")
        with self._lock:
            self._initialised.add(db)

    def _give_back(self, db: str, conn: Conn) -> None:
        if conn.closed or conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.close()
            return
        with self._lock:
            idle = self._idle.setdefault(db, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def postgres_reachable(self) -> bool:
        """Open and close a cursor on the ``postgres`` database, as ``/web/health?db_server_status=1`` does."""
        try:
            with psycopg.connect(self.conninfo("postgres")) as conn:
                conn.cursor().close()
        except psycopg.Error:
            return False
        return True

    def list_owned(self) -> list[str]:
        """Databases owned by the role the DSN logs in as (``list_dbs`` with a db filter)."""
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            return [r[0] for r in conn.execute(_LIST_SQL, (list(_NOT_LISTED),)).fetchall()]

    def close(self) -> None:
        with self._lock:
            pools, self._idle = self._idle, {}
        for conns in pools.values():
            for conn in conns:
                conn.close()


def _usable(conn: Conn) -> bool:
    """An idle connection may have been terminated by the server meanwhile (a copy's ``pg_terminate_backend``)."""
    if conn.closed or conn.broken:
        return False
    try:
        conn.execute("")
    except psycopg.Error:
        return False
    return True


@dataclass(frozen=True)
class DbSelection:
    """``--db`` (a comma-separated list) and ``--db-filter``: which databases HTTP requests may use."""

    db_names: tuple[str, ...]
    db_filter: str | None = None
    list_db: bool = True

    def filter(self, dbs: list[str], host: str) -> list[str]:
        """Odoo's ``db_filter``: the regex (anchored at the start only) or, without one, the ``--db`` list."""
        if self.db_filter:
            hostname = host.partition(":")[0]
            hostname = hostname.removeprefix("www.")
            domain = hostname.partition(".")[0]
            pattern = re.compile(self.db_filter.replace("%h", re.escape(hostname)).replace("%d", re.escape(domain)))
            return [db for db in dbs if pattern.match(db)]
        if self.db_names:
            return sorted(set(self.db_names).intersection(dbs))
        return list(dbs)

    def list_dbs(self, databases: Databases) -> list[str]:
        """Odoo's ``list_dbs(force=True)``: the ``--db`` list as given when there is no filter, else the
        databases the role owns; a server that cannot be reached lists nothing (``http.db_list``)."""
        if not self.db_filter and self.db_names:
            return sorted(self.db_names)
        try:
            return databases.list_owned()
        except psycopg.OperationalError:
            return []

    def db_list(self, databases: Databases, host: str) -> list[str]:
        """Odoo's ``http.db_list(force=True)``: the listable databases the filter lets through."""
        return self.filter(self.list_dbs(databases), host)
