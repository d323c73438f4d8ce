"""Benchmark datasets: a promotion sandbox whose production is sized by target bytes.

Built on ``odoo_standin init`` through :class:`promote_pipeline.cli.sandbox.Sandbox` (which copies
production into staging, as Odoo.sh makes staging): the database is sized with contacts
(``res_partner`` rows, loaded with COPY), the filestore with attachment files of random
(incompressible, like the PDFs and images of a real filestore) bytes. Each size lives in
``bench/.work/<size>/`` with its own ops database and database prefix, so it never touches the
repository's ``.sandbox/`` or the test-suite's sandboxes.

    .venv/bin/python bench/dataset.py --size small      # build (idempotent)
    .venv/bin/python bench/dataset.py --size 1g --down  # drop its databases and remove its folder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK = BENCH_DIR / ".work"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from promote_pipeline.cli.sandbox import Sandbox  # noqa: E402
from promote_pipeline.cli.sandbox_hosts import HostsSandbox  # noqa: E402

TOPOLOGIES = ("local", "hosts")

# pg_database_size of an empty Odoo-shaped database, and what one contact adds (table and indexes),
# measured on PostgreSQL 15 with odoo_standin's schema.
EMPTY_DB_BYTES = 8 * 2**20
BYTES_PER_PARTNER = 131


@dataclass(frozen=True)
class Size:
    name: str
    db_bytes: int
    fs_bytes: int
    fs_files: int
    pbkdf2_rounds: int = 600_000  # Odoo's own default: a smoke-test login costs what it costs in production

    @property
    def partners(self) -> int:
        return max(100, (self.db_bytes - EMPTY_DB_BYTES) // BYTES_PER_PARTNER)

    @property
    def attachment_size(self) -> int:
        return max(1, self.fs_bytes // self.fs_files)


SIZES = {
    "small": Size("small", db_bytes=24 * 2**20, fs_bytes=8 * 2**20, fs_files=200, pbkdf2_rounds=1000),
    "1g": Size("1g", db_bytes=2**30, fs_bytes=2**30, fs_files=20_000),
    "4g": Size("4g", db_bytes=4 * 2**30, fs_bytes=4 * 2**30, fs_files=80_000),
}


# Database and role names are cluster-wide: two checkouts (or a checkout and CI) benchmarking on one server at
# once must not share them, so they carry a tag of this checkout's folder.
CHECKOUT_TAG = hashlib.sha1(str(WORK.resolve()).encode()).hexdigest()[:6]


def work_name(size: Size, topology: str = "local") -> str:
    """The size's folder under ``bench/.work/`` (and its names' stem): ``small``, or ``hosts-small`` for the
    hosts topology, so the two never share a sandbox."""
    return size.name if topology == "local" else f"{topology}-{size.name}"


def sandbox(size: Size, topology: str = "local") -> Sandbox:
    """The size's sandbox; with ``topology="hosts"`` the one of ``promote sandbox up --topology hosts`` (test hosts
    as network namespaces: PostgreSQL on ``db``, the stand-ins on ``staging``/``production``; root only)."""
    name = work_name(size, topology).replace("-", "_")
    kind = HostsSandbox if topology == "hosts" else Sandbox
    return kind(root=WORK / work_name(size, topology) / "sandbox",
                ops_database=f"promote_ops_bench_{name}_{CHECKOUT_TAG}", db_prefix=f"bench_{name}_{CHECKOUT_TAG}",
                pbkdf2_rounds=size.pbkdf2_rounds, partners=size.partners, attachments=size.fs_files,
                attachment_size=size.attachment_size)


def evidence_root(size: Size, topology: str = "local") -> Path:
    return WORK / work_name(size, topology) / "evidence"


def build(size: Size, topology: str = "local") -> dict[str, Any]:
    """Bring the size's sandbox up (a no-op when it is already built); return what it holds."""
    box = sandbox(size, topology)
    started = time.monotonic()
    box.up()
    status = box.status()
    res = box.resources()
    host = res["odoo_host"]
    prod = res["ops_db"].active_deployment("env_demo_prod")
    assert prod is not None
    db_bytes = host.database_size("PROMOTE_SANDBOX_PG_DSN", prod.db_name)
    files, fs_bytes = host.filestore_stats(prod.data_dir, prod.served_db)
    return {"size": size.name, "seconds": round(time.monotonic() - started, 1), "database": prod.db_name,
            "db_bytes": db_bytes, "filestore_files": files, "filestore_bytes": fs_bytes,
            "router_url": status["router_url"]}


def down(size: Size, topology: str = "local") -> None:
    """Everything the size's sandbox made: its processes, databases and folder (the hosts topology: its network
    namespaces and their PostgreSQL too, by the sandbox's own teardown)."""
    box = sandbox(size, topology)
    box.down()
    import shutil

    shutil.rmtree(WORK / work_name(size, topology), ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--topology", choices=TOPOLOGIES, default="local",
                        help="local (default) or hosts: the test hosts as network namespaces (root)")
    parser.add_argument("--down", action="store_true", help="drop the size's databases and remove its folder")
    args = parser.parse_args(argv)
    os.environ.setdefault("PROMOTE_EVIDENCE_ROOT", str(evidence_root(SIZES[args.size], args.topology)))
    if args.down:
        down(SIZES[args.size], args.topology)
        print(f"{args.size} ({args.topology}): removed")
        return 0
    print(json.dumps(build(SIZES[args.size], args.topology)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
