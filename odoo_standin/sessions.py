"""HTTP sessions as Odoo keeps them: one JSON file per session under ``<data_dir>/sessions``.

Copied from ``odoo/http.py`` (``FilesystemSessionStore``, ``Session``, ``get_default_session``)
and the werkzeug store it extends (``odoo/tools/_vendor/sessions.py``):

- a session id is 84 URL-safe base64 characters (sha512 of the time and 64 random bytes, last
  byte dropped); a cookie that does not look like one gets a new, empty session;
- the file is ``sessions/<sid[:2]>/<sid>``, written to a temporary file in ``sessions/`` then
  renamed into place (so a reader never sees half a file) and made mode 0644; the
  ``sessions`` folder is made 0700 and each ``<sid[:2]>`` folder 0755;
- the content is the session dict as JSON: ``context``, ``db``, ``debug``, ``login``, ``uid``,
  ``session_token``, ``_trace``;
- logging out clears everything but ``debug`` and asks for a *rotation*: the old file is
  deleted and the session saved under a new id (and a new cookie).

Because the files are the only state, two stand-ins given the same data_dir share their
sessions, and a restarted one keeps them, as Odoo servers do.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from hashlib import sha512
from pathlib import Path
from typing import Any

SESSION_LIFETIME = 7 * 24 * 3600
"""Odoo's default ``sessions.max_inactivity_seconds``: the cookie's Max-Age."""
DEFAULT_LANG = "en_US"
_VALID_KEY = re.compile(r"^[A-Za-z0-9_-]{84}$")
_TMP_SUFFIX = ".__wz_sess"
_TRACE_REFRESH = 3600  # a device's last_activity is rewritten at most hourly


def default_session() -> dict[str, Any]:
    return {"context": {}, "db": None, "debug": "", "login": None, "uid": None, "session_token": None,
            "_trace": []}


class Session:
    """The session dict plus Odoo's bookkeeping: whether it changed, and whether it must get a new id."""

    def __init__(self, data: dict[str, Any], sid: str, new: bool = False) -> None:
        self.data: dict[str, Any] = {}
        self.data.update(data)
        self.sid = sid
        self.is_new = new
        self.is_dirty = False
        self.should_rotate = False
        self.can_save = True

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` as JSON would give it back; the session is dirty only if it really changed."""
        value = json.loads(json.dumps(value))
        if key not in self.data or self.data[key] != value:
            self.is_dirty = True
        self.data[key] = value

    @property
    def db(self) -> str | None:
        return self.data.get("db")

    @property
    def uid(self) -> int | None:
        return self.data.get("uid")

    @property
    def context(self) -> dict[str, Any]:
        context: dict[str, Any] = self.data.setdefault("context", {})
        return context

    def fill_defaults(self) -> None:
        for key, value in default_session().items():
            self.data.setdefault(key, value)
        if not self.context.get("lang"):
            self.context["lang"] = DEFAULT_LANG

    def logout(self, keep_db: bool = False) -> None:
        db = self.db if keep_db else None
        debug = self.data.get("debug", "")
        self.data.clear()
        self.is_dirty = True
        for key, value in {**default_session(), "db": db, "debug": debug}.items():
            self.set(key, value)
        self.context["lang"] = DEFAULT_LANG
        self.should_rotate = True

    def finalize(self, db: str, uid: int, login: str, context: dict[str, Any], token: str | bool) -> None:
        """A successful login: the user's ids and context, a token, and a new id on save."""
        self.should_rotate = True
        for key, value in (("db", db), ("login", login), ("uid", uid), ("context", context),
                           ("session_token", token)):
            self.set(key, value)

    def update_trace(self, ip_address: str | None, now: int | None = None) -> None:
        """One ``_trace`` entry per device, its ``last_activity`` refreshed at most hourly.

        Odoo reads platform and browser from werkzeug's user-agent object, which no longer parses
        anything (both are always ``null``); the stand-in writes the same.
        """
        now = int(time.time()) if now is None else now
        traces: list[dict[str, Any]] = self.data.setdefault("_trace", [])
        for trace in traces:
            if (trace.get("platform"), trace.get("browser"), trace.get("ip_address")) == (None, None, ip_address):
                if now - int(trace.get("last_activity", 0)) >= _TRACE_REFRESH:
                    trace["last_activity"] = now
                    self.is_dirty = True
                return
        traces.append({"platform": None, "browser": None, "ip_address": ip_address, "first_activity": now,
                       "last_activity": now})
        self.is_dirty = True


class SessionStore:
    """Sessions as files under ``path`` (``<data_dir>/sessions``), readable by any process sharing it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(mode=0o700, parents=True, exist_ok=True)

    @staticmethod
    def generate_key() -> str:
        key = str(time.time()).encode() + os.urandom(64)
        return base64.urlsafe_b64encode(sha512(key).digest()[:-1]).decode()

    @staticmethod
    def is_valid_key(key: str | None) -> bool:
        return key is not None and _VALID_KEY.match(key) is not None

    def filename(self, sid: str) -> Path:
        if not self.is_valid_key(sid):
            raise ValueError(f"Invalid session id {sid!r}")
        return self.path / sid[:2] / sid

    def new(self) -> Session:
        return Session({}, self.generate_key(), new=True)

    def get(self, sid: str) -> Session:
        """The saved session, or a new one when the file is gone (Odoo keeps the cookie's id for it)."""
        try:
            raw = self.filename(sid).read_bytes()
        except (OSError, ValueError):
            return self.new()
        try:
            data = json.loads(raw)
        except ValueError:
            data = {}
        return Session(data if isinstance(data, dict) else {}, sid)

    def save(self, session: Session) -> None:
        target = self.filename(session.sid)
        with contextlib.suppress(FileExistsError):
            target.parent.mkdir(mode=0o755)
        fd, tmp = tempfile.mkstemp(suffix=_TMP_SUFFIX, dir=self.path)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(session.data, handle)
        try:
            os.replace(tmp, target)
            os.chmod(target, 0o644)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def delete(self, session: Session) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.filename(session.sid).unlink()

    def rotate(self, session: Session, token: Callable[[str], str | bool] | None) -> None:
        """Delete the old file, give the session a new id (and the token that goes with it), save it."""
        self.delete(session)
        session.sid = self.generate_key()
        if session.uid and token is not None:
            session.set("session_token", token(session.sid))
        session.should_rotate = False
        self.save(session)
