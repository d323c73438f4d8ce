"""The SSH artifact store's upload of a filestore against a plain ``tar | zstd -1 | ssh`` of the same folder,
between the same namespaces (the promoter's root namespace and a test host's, ``worker``, through its sshd).

    .venv/bin/python bench/ssh_store_upload.py [--files 2000] [--mib 200] [--rounds 3]

Needs root and network namespaces, as ``tests/hosts/`` does. Each round, alternated: (a) ``tar -cf - . | zstd -1 |
ssh worker 'zstd -d | tar -xf -'`` into a new folder there; (s) the store's first backup of the filestore into a
new, empty store (every object sent, hashed on the host, the index written); (w) the store's second backup of the
same filestore (nothing sent: the host is asked which objects it has). The filestore is random bytes in Odoo's
layout (``<ab>/<sha1>``), sizes spread as attachments are (mostly small, a few large). Prints one line per
pipeline and the ratios s/a and w/a.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.netns_hosts import HostNetwork, prefix_for, unavailable_reason  # noqa: E402
from resources.ssh_artifact_store import SshArtifactStore  # noqa: E402

KEY_REF = "PROMOTE_BENCH_STORE_SSH_KEY"


def make_filestore(folder: Path, files: int, mib: int, seed: int = 7) -> int:
    """``files`` files of random bytes, ``mib`` MiB in all, in Odoo's layout; returns the bytes written."""
    rng = random.Random(seed)
    weights = [rng.paretovariate(1.2) for _ in range(files)]
    scale = mib * 2**20 / sum(weights)
    total = 0
    for weight in weights:
        data = os.urandom(max(1, int(weight * scale)))
        sha1 = hashlib.sha1(data).hexdigest()
        (folder / sha1[:2]).mkdir(parents=True, exist_ok=True)
        (folder / sha1[:2] / sha1).write_bytes(data)
        total += len(data)
    return total


def raw_copy(net: HostNetwork, src: Path, dest: Path) -> float:
    start = time.monotonic()
    remote = f"mkdir -p {dest} && zstd -q -d | tar -C {dest} -xf -"
    tar = subprocess.Popen(["tar", "-C", str(src), "-cf", "-", "."], stdout=subprocess.PIPE)
    zstd = subprocess.Popen(["zstd", "-q", "-1", "-c"], stdin=tar.stdout, stdout=subprocess.PIPE)
    assert tar.stdout is not None and zstd.stdout is not None
    tar.stdout.close()
    ssh = subprocess.run(net.ssh_argv("worker", remote), stdin=zstd.stdout, capture_output=True)
    zstd.stdout.close()
    if tar.wait() != 0 or zstd.wait() != 0 or ssh.returncode != 0:
        raise SystemExit(f"raw copy failed: {ssh.stderr.decode(errors='replace').strip()[:300]}")
    return time.monotonic() - start


def store_backup(store: SshArtifactStore, src: Path) -> tuple[float, dict[str, object]]:
    start = time.monotonic()
    artifact_id = store.new_artifact_id("bench", "blue")
    store.allocate(artifact_id)
    facts = store.ingest_filestore(artifact_id, src)
    return time.monotonic() - start, facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"needs network namespaces: {reason}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-ssh-store-"))
    net = HostNetwork.build(work / "hosts", names=("worker",), prefix=prefix_for("bench-ssh-store"))
    assert net.ssh is not None
    os.environ[KEY_REF] = str(net.ssh.identity_file)  # the path of an owner-only key file
    times: dict[str, list[float]] = {"a": [], "s": [], "w": []}
    try:
        src = work / "filestore"
        total = make_filestore(src, args.files, args.mib)
        print(f"filestore: {args.files} files, {total / 2**20:.1f} MiB of random bytes; load average"
              f" {os.getloadavg()[0]:.1f}")
        remote = net.host_dir("worker")
        for round_no in range(args.rounds):
            times["a"].append(raw_copy(net, src, remote / f"raw{round_no}"))
            store = SshArtifactStore(root=str(remote / f"store{round_no}"), create_root=True,
                                     host=net["worker"].address, user=net.ssh.user, identity_ref=KEY_REF,
                                     known_hosts_file=str(net.ssh.known_hosts))
            try:
                seconds, first = store_backup(store, src)
                times["s"].append(seconds)
                seconds, second = store_backup(store, src)
                times["w"].append(seconds)
            finally:
                store.close()
            assert first["sent_files"] == args.files and second["sent_files"] == 0, (first, second)
            shutil.rmtree(remote / f"raw{round_no}", ignore_errors=True)
            shutil.rmtree(remote / f"store{round_no}", ignore_errors=True)
            print(f"round {round_no + 1}: a {times['a'][-1]:.2f} s, s {times['s'][-1]:.2f} s,"
                  f" w {times['w'][-1]:.2f} s")
    finally:
        net.teardown()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"(a) tar | zstd -1 | ssh: median {med['a']:.2f} s  runs {', '.join(f'{t:.2f}' for t in times['a'])}")
    print(f"(s) SSH store, first backup (all sent): median {med['s']:.2f} s  runs"
          f" {', '.join(f'{t:.2f}' for t in times['s'])}")
    print(f"(w) SSH store, second backup (none sent): median {med['w']:.2f} s  runs"
          f" {', '.join(f'{t:.2f}' for t in times['w'])}")
    print(f"ratio s/a {med['s'] / med['a']:.2f}   w/a {med['w'] / med['a']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
