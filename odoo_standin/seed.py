"""``init``: create one Odoo-shaped database and its filestore, filled with demo data.

The point is realistic *shape and size*, not realistic business data: tooling that copies,
checks and promotes Odoo databases needs rows where Odoo keeps them, passwords hashed the
way Odoo hashes them (so logging in costs what it costs in production), and attachment
files at the paths Odoo derives from their SHA-1. Record ids follow a fresh Odoo database
(company 1, OdooBot partner 2, ``__system__`` user 1, admin user 2) so nothing that
relies on those conventions is surprised.

Size knobs are ``partners`` (database rows, loaded with COPY so a million is quick) and
``attachments`` x ``attachment_size`` (filestore bytes, written one file at a time in
chunks, so a multi-gigabyte filestore never sits in memory).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from passlib.hash import pbkdf2_sha512
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from odoo_standin import DEFAULT_MODULES, schema, seed_settings

_CHUNK = 1 << 20
_SHORTDESC = {
    "base": "Base",
    "web": "Web",
    "mail": "Discuss",
    "contacts": "Contacts",
    "sale": "Sales",
    "web_enterprise": "Web Enterprise",
    "iap": "In-App Purchases",
    "payment": "Payment Engine",
    "payment_stripe": "Payment Provider: Stripe",
    "delivery": "Delivery Costs",
    "delivery_dhl": "DHL Express Shipping",
    "website": "Website",
    "auth_oauth": "OAuth2 Authentication",
    "google_calendar": "Google Calendar",
    "microsoft_calendar": "Outlook Calendar",
    "cloud_storage": "Cloud Storage",
    "cloud_storage_google": "Google Cloud Storage",
}
# (xml name, name, share, implied): base's groups; a user in a group is also in those it implies.
_GROUPS = (
    ("group_user", "Internal User", False, ()),
    ("group_erp_manager", "Access Rights", False, ("group_user",)),
    ("group_system", "Settings", False, ("group_erp_manager", "group_user")),
    ("group_portal", "Portal", True, ()),
    ("group_public", "Public", True, ()),
)
_ADMIN_UID = 2
_FIRST_DEMO_PARTNER = 4


class SeedError(Exception):
    """``init`` refused or failed for a reason the operator can fix (message says how)."""


@dataclass
class SeedOptions:
    """Everything ``init`` needs; the admin password arrives here, never through argv."""

    db: str
    data_dir: Path
    admin_password: str
    users: int = 5
    partners: int = 50
    attachments: int = 20
    attachment_size: int = 2048
    modules: tuple[str, ...] = DEFAULT_MODULES
    enterprise: bool = False
    admin_login: str = "admin"
    pbkdf2_rounds: int = 600_000
    server_version: str = "17.0"
    replace: bool = False

    @property
    def installed_modules(self) -> list[str]:
        """``base`` first, then the modules asked for, then ``web_enterprise`` for ``--enterprise``."""
        modules = ["base", *(m for m in self.modules if m != "base")]
        if self.enterprise and "web_enterprise" not in modules:
            modules.append("web_enterprise")
        return modules

    @property
    def filestore(self) -> Path:
        """Odoo's layout: ``<data_dir>/filestore/<dbname>/<sha1[:2]>/<sha1>``."""
        return self.data_dir / "filestore" / self.db


def init_database(maintenance_dsn: str, opts: SeedOptions) -> dict[str, object]:
    """Create ``opts.db`` and its filestore; return the summary printed by the CLI (no secrets).

    On any failure the half-built database and filestore are removed again, so a retry
    does not need ``--replace``.
    """
    if opts.users < 1:
        raise SeedError("--users must be at least 1 (the admin)")
    maintenance = _maintenance_conninfo(maintenance_dsn)
    _prepare_target(maintenance, opts)
    modules = opts.installed_modules
    try:
        with psycopg.connect(make_conninfo(maintenance, dbname=opts.db)) as conn:
            schema.create_tables(conn, modules)
            xmlids = _seed_rows(conn, opts)
            total = _seed_attachments(conn, opts)
            _insert_xmlids(conn, xmlids)
            schema.add_constraints(conn, modules)
    except BaseException:
        _drop_database(maintenance, opts.db)
        shutil.rmtree(opts.filestore, ignore_errors=True)
        raise
    return {
        "db": opts.db,
        "data_dir": str(opts.data_dir),
        "filestore": str(opts.filestore),
        "users": opts.users,
        "partners": opts.partners,
        "attachments": opts.attachments,
        "bytes": total,
    }


def _maintenance_conninfo(dsn: str) -> str:
    """The DSN as given, pointed at the ``postgres`` database unless it names one."""
    return dsn if conninfo_to_dict(dsn).get("dbname") else make_conninfo(dsn, dbname="postgres")


def _prepare_target(maintenance: str, opts: SeedOptions) -> None:
    """Refuse to clobber an existing database or filestore unless ``replace`` was asked for."""
    with psycopg.connect(maintenance, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (opts.db,)).fetchone()
        stale_files = opts.filestore.is_dir() and any(opts.filestore.iterdir())
        if (exists or stale_files) and not opts.replace:
            what = f"database {opts.db!r}" if exists else f"filestore {opts.filestore}"
            raise SeedError(f"{what} already exists; pass --replace to drop and recreate it")
        if exists:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(opts.db)))
        shutil.rmtree(opts.filestore, ignore_errors=True)
        conn.execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(sql.Identifier(opts.db))
        )


def _drop_database(maintenance: str, db: str) -> None:
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


XmlId = tuple[str, str, str, int]
"""``(module, name, model, res_id)`` -- one ``ir_model_data`` row."""


def _seed_rows(conn: psycopg.Connection, opts: SeedOptions) -> list[XmlId]:
    """Company, partners, users and their groups, modules, config parameters and live settings.

    Returns the external ids of the records created, to be inserted once all exist.
    """
    xmlids: list[XmlId] = []
    hasher = pbkdf2_sha512.using(rounds=opts.pbkdf2_rounds)
    modules = opts.installed_modules
    with conn.cursor() as cur:
        cur.execute("INSERT INTO res_company (id, name, partner_id) VALUES (1, 'YourCompany', 1)")
        xmlids.append(("base", "main_company", "res.company", 1))
        fixed = [(1, "YourCompany", "info@yourcompany.example.com", "main_partner"),
                 (2, "OdooBot", "odoobot@example.com", "partner_root"),
                 (3, "Mitchell Admin", "admin@yourcompany.example.com", "partner_admin")]
        for pid, name, email, xml_name in fixed:
            cur.execute("INSERT INTO res_partner (id, name, email, company_id) VALUES (%s, %s, %s, 1)",
                        (pid, name, email))
            xmlids.append(("base", xml_name, "res.partner", pid))

        users = [(1, "__system__", None, False, 2),
                 (_ADMIN_UID, opts.admin_login, hasher.hash(opts.admin_password), True, 3)]
        for k in range(1, opts.users):
            pid = _FIRST_DEMO_PARTNER + k - 1
            cur.execute("INSERT INTO res_partner (id, name, email, company_id) VALUES (%s, %s, %s, 1)",
                        (pid, f"Demo User {k}", f"user{k}@example.com"))
            users.append((_ADMIN_UID + k, f"user{k}", hasher.hash(secrets.token_urlsafe(18)), True, pid))
        cur.executemany("INSERT INTO res_users (id, login, password, active, partner_id, company_id) "
                        "VALUES (%s, %s, %s, %s, %s, 1)", users)
        xmlids += [("base", "user_root", "res.users", 1), ("base", "user_admin", "res.users", _ADMIN_UID)]
        xmlids += _seed_groups(cur, [u[0] for u in users])

        first_contact = _FIRST_DEMO_PARTNER + opts.users - 1
        with cur.copy("COPY res_partner (id, name, email, active) FROM STDIN") as copy:
            for i in range(opts.partners):
                n = i + 1
                copy.write_row((first_contact + i, f"Demo Partner {n}", f"partner{n}@example.com", True))

        for mid, name in enumerate(modules, start=1):
            enterprise = name == "web_enterprise"
            version = f"{opts.server_version}.1.3" if name == "base" else f"{opts.server_version}.1.0"
            cur.execute("INSERT INTO ir_module_module (id, name, state, latest_version, license, shortdesc) "
                        "VALUES (%s, %s, 'installed', %s, %s, %s)",
                        (mid, name, version, "OEEL-1" if enterprise else "LGPL-3",
                         Jsonb({"en_US": _SHORTDESC.get(name, name.replace("_", " ").title())})))
            xmlids.append(("base", f"module_{name}", "ir.module.module", mid))

        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        params = {"database.uuid": str(uuid.uuid4()), "database.secret": str(uuid.uuid4()),
                  "database.create_date": now.strftime("%Y-%m-%d %H:%M:%S"),
                  "web.base.url": "http://localhost"}
        cur.executemany("INSERT INTO ir_config_parameter (key, value) VALUES (%s, %s)", list(params.items()))
        xmlids += seed_settings.seed(cur, modules, now)
    return xmlids


def _seed_groups(cur: psycopg.Cursor, uids: list[int]) -> list[XmlId]:
    """Base's groups; ``__system__`` and admin are in Settings (and what it implies), other users internal."""
    ids: dict[str, int] = {}
    xmlids: list[XmlId] = []
    for gid, (xml_name, name, share, _) in enumerate(_GROUPS, start=1):
        cur.execute("INSERT INTO res_groups (id, name, share) VALUES (%s, %s, %s)",
                    (gid, Jsonb({"en_US": name}), share))
        ids[xml_name] = gid
        xmlids.append(("base", xml_name, "res.groups", gid))
    implied = {g[0]: g[3] for g in _GROUPS}
    members = []
    for uid in uids:
        top = "group_system" if uid in (1, _ADMIN_UID) else "group_user"
        members += [(ids[g], uid) for g in (top, *implied[top])]
    cur.executemany("INSERT INTO res_groups_users_rel (gid, uid) VALUES (%s, %s)", members)
    return xmlids


def _seed_attachments(conn: psycopg.Connection, opts: SeedOptions) -> int:
    """Write ``attachments`` random files into the filestore, streaming rows into COPY as we go.

    Every tenth attachment (ids 1, 11, 21...) is ``public`` so that both the anonymous and the
    session-checked download paths have something to serve. Returns the total bytes.
    """
    opts.filestore.mkdir(parents=True, exist_ok=True)
    first_contact = _FIRST_DEMO_PARTNER + opts.users - 1
    total = 0
    columns = "id, name, res_model, res_id, type, store_fname, file_size, checksum, mimetype, public"
    with conn.cursor() as cur, cur.copy(f"COPY ir_attachment ({columns}) FROM STDIN") as copy:
        blobs = _write_blobs(opts.filestore, opts.attachments, opts.attachment_size)
        for i, (digest, size) in enumerate(blobs):
            res_id = first_contact + i % opts.partners if opts.partners else 1
            copy.write_row((i + 1, f"demo_attachment_{i + 1}.bin", "res.partner", res_id, "binary",
                            f"{digest[:2]}/{digest}", size, digest, "application/octet-stream", i % 10 == 0))
            total += size
    return total


def _write_blobs(filestore: Path, count: int, size: int) -> Iterator[tuple[str, int]]:
    """Yield ``(sha1, size)`` per file written; each is streamed to a temp file, then renamed into place."""
    made: set[str] = set()
    tmp = filestore / f".standin-{os.getpid()}.tmp"
    for _ in range(count):
        digest = hashlib.sha1()
        with open(tmp, "wb") as handle:
            left = size
            while left:
                chunk = os.urandom(min(left, _CHUNK))
                digest.update(chunk)
                handle.write(chunk)
                left -= len(chunk)
        hexdigest = digest.hexdigest()
        if hexdigest[:2] not in made:
            (filestore / hexdigest[:2]).mkdir(exist_ok=True)
            made.add(hexdigest[:2])
        os.replace(tmp, filestore / hexdigest[:2] / hexdigest)
        yield hexdigest, size


def _insert_xmlids(conn: psycopg.Connection, xmlids: list[XmlId]) -> None:
    """External ids, as Odoo keeps them for every record it loads from data files."""
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO ir_model_data (module, name, model, res_id) "
                        "VALUES (%s, %s, %s, %s)", xmlids)
