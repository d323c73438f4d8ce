"""Mutual exclusion on a production environment: a session-level advisory lock.

The lock is held by a dedicated connection for the whole run: PostgreSQL itself releases it when the
holding process dies, which makes it both race-free and a liveness signal (the safety net reads it).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg

from resources.ops_db.connection import OpsConnection, connect_retrying

_PROMOTION_LOCK_NAMESPACE = b"promote-pipeline/environment-lock/"


def lock_key(environment_id: str) -> int:
    """The environment's 64-bit advisory lock key: the first 8 bytes of a SHA-256 of its id (namespaced), as a
    signed bigint. A 32-bit ``hashtext`` would let two environments share a lock (collisions are found among a
    few hundred thousand ids), so one promotion would block, or be mistaken for, another's."""
    digest = hashlib.sha256(_PROMOTION_LOCK_NAMESPACE + environment_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _pg_locks_ids(key: int) -> tuple[int, int]:
    """How pg_locks shows a one-bigint advisory lock: ``classid`` the high 32 bits, ``objid`` the low 32 bits
    (and ``objsubid`` 1, where the two-int4 form shows 2)."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def _try_lock(conn: psycopg.Connection[Any], environment_id: str) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s::bigint)", (lock_key(environment_id),)).fetchone()
    return bool(row and row[0])


@dataclass
class EnvironmentLock:
    """A held promotion lock; ``release`` is idempotent."""

    environment_id: str
    conn: psycopg.Connection[Any] | None
    conninfo: str = ""

    def ensure(self) -> bool:
        """Hold the lock again if its session was lost (a PostgreSQL restart); False if someone else took it."""
        if self.conn is not None and not self.conn.closed:
            try:
                self.conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                pass
        self.conn = connect_retrying(self.conninfo, autocommit=True)
        return _try_lock(self.conn, self.environment_id)

    def release(self) -> None:
        if self.conn is not None and not self.conn.closed:
            # Unlock before closing: a closed session's locks go only when its backend has exited, after
            # close() returns, so whoever takes the lock next (a rollback, the next promotion) could still
            # find it held. A session that is already gone has released it anyway.
            with contextlib.suppress(psycopg.Error):
                self.conn.execute("SELECT pg_advisory_unlock_all()")
            self.conn.close()
        self.conn = None


class EnvironmentLocks(OpsConnection):
    """Taking, waiting for and looking at the promotion lock of an environment."""

    def try_lock_environment(self, environment_id: str) -> EnvironmentLock | None:
        """Take the promotion lock on an environment, or None when another session holds it."""
        conn = connect_retrying(self._conninfo(), autocommit=True)
        if not _try_lock(conn, environment_id):
            conn.close()
            return None
        return EnvironmentLock(environment_id, conn, self._conninfo())

    def wait_lock_environment(self, environment_id: str, timeout_seconds: float) -> EnvironmentLock | None:
        """Take the promotion lock, waiting up to ``timeout_seconds`` for its holder; None if it did not come."""
        conn = connect_retrying(self._conninfo(), autocommit=True)
        try:
            conn.execute(f"SET lock_timeout = '{int(timeout_seconds * 1000)}ms'")
            conn.execute("SELECT pg_advisory_lock(%s::bigint)", (lock_key(environment_id),))
            conn.execute("SET lock_timeout = 0")
        except psycopg.errors.LockNotAvailable:
            conn.close()
            return None
        return EnvironmentLock(environment_id, conn, self._conninfo())

    def lock_holder_pid(self, environment_id: str) -> int | None:
        """Backend pid of the session holding an environment's promotion lock, if any."""
        high, low = _pg_locks_ids(lock_key(environment_id))
        row = self._one(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1 AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())",
            (high, low),
        )
        return int(row["pid"]) if row else None
