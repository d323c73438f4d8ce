"""Test hosts on one machine: named Linux network namespaces on a private bridge, each with its own sshd.

The promotion is moving from "everything on the promoter's machine" to several hosts (database, staging,
production, router, worker). This builds such a set of hosts on the machine itself, for the test suite (and the
sandbox later): one network namespace per host (``ip netns``), a veth pair from each into one bridge of the root
namespace, a private /24 that none of the machine's routes or addresses overlap, loopback up everywhere. The root
namespace has the subnet's first address on the bridge, so the promoter's own process reaches every host the way
it would reach a remote machine; the hosts have no default route and no forwarding, so they reach nothing else.

Names are unique per checkout and process: a prefix ``pp`` + 6 hex digits of a hash of the checkout's path and the
pid (or a given id). Namespaces are ``<prefix>-<host>``; interfaces ``<prefix>br`` (the bridge) and
``<prefix>v<i>`` (each host's veth end in the root namespace; the other end is ``eth0`` inside), all within
Linux's 15 characters. ``teardown_prefix`` removes everything of a prefix (processes in its namespaces, the
namespaces, its interfaces), whatever state a failed build or a killed test left, and may be called any number of
times.

Processes started in a namespace (``HostNetwork.spawn``: sshd, PostgreSQL, ...) run detached in their own process
group, so they outlive nothing by accident: teardown stops every process still in the namespaces, including those
a client started over SSH. The filesystem is the machine's: a host's files are whatever paths it is told to use.

Only the machine's own addresses are ever used: the subnet is chosen from 10.200.0.0/13 to avoid every route and
address the machine has (another checkout's bridge included), under a lock so that two builds do not pick the
same one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from resources.private_files import make_private_dirs, write_private

DEFAULT_HOSTS = ("db", "staging", "production", "router", "worker")
IFNAMSIZ = 15  # Linux's longest interface name
SSHD = "/usr/sbin/sshd"
SSH_PORT = 22
PG_PORT = 5432
# Where candidate subnets are drawn from: 10.200.0.0-10.207.255.255, 2048 possible /24s, away from the ranges
# that container runtimes and VPNs usually take (10.0.x, 10.8.x, 172.17.x, 192.168.x).
_POOL = ipaddress.IPv4Network("10.200.0.0/13")
_LOCK = Path(tempfile.gettempdir()) / "promote-pipeline-netns.lock"
# One file per built network, naming the process that built it: what lets a later run remove the leftovers of
# one that was killed (its process gone) without touching those of a run still going.
_REGISTRY = Path(tempfile.gettempdir()) / "promote-pipeline-netns"


class NetnsError(RuntimeError):
    """Building, using or removing the test hosts failed; the message names the step and the tool's words."""


def _ip_bin() -> str:
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin") or "ip"


def _run(argv: Sequence[str], what: str, check: bool = True, input_text: str | None = None) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, input=input_text,
                          stdin=None if input_text is not None else subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise NetnsError(f"{what} failed: {(done.stderr or done.stdout).strip()[:300]}")
    return done.stdout


def ip(*args: str, check: bool = True) -> str:
    return _run([_ip_bin(), *args], f"ip {' '.join(args)}", check=check)


def prefix_for(seed: str | None = None, checkout: Path | None = None) -> str:
    """``pp`` + 6 hex digits of the checkout's path and ``seed`` (default: this process's pid): short enough for
    interface names, distinct between checkouts and between test processes of one checkout."""
    where = str((checkout or Path(__file__).resolve().parents[1]).resolve())
    digest = hashlib.sha256(f"{where}\0{seed if seed is not None else os.getpid()}".encode()).hexdigest()
    return f"pp{digest[:6]}"


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here (None: they can): not root, no ``ip``, or a container that does
    not permit them. Tries for real: makes a namespace and removes it."""
    if os.geteuid() != 0:
        return f"network namespaces need root (ip netns add); running as uid {os.geteuid()}"
    if not shutil.which("ip") and not os.path.exists("/usr/sbin/ip") and not os.path.exists("/sbin/ip"):
        return "iproute2's `ip` is not installed (scripts/install_system_deps.sh installs it)"
    probe = f"pp-probe-{os.getpid()}"
    done = subprocess.run([_ip_bin(), "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"`ip netns add` is not permitted here: {done.stderr.strip()[:200]}"
    subprocess.run([_ip_bin(), "netns", "del", probe], capture_output=True)
    return None


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Held while a subnet is chosen and put on a bridge: two builds at once would otherwise both find the
    same subnet free."""
    with open(_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def used_networks(ignore_device: str = "") -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the machine routes or has an address in (all tables, every interface but
    ``ignore_device``)."""
    used: list[ipaddress.IPv4Network] = []
    for route in json.loads(ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default" and route.get("dev") != ignore_device:
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
    for link in json.loads(ip("-j", "-4", "addr", "show") or "[]"):
        if link.get("ifname") == ignore_device:
            continue
        for addr in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                used.append(ipaddress.IPv4Network(f"{addr['local']}/{addr['prefixlen']}", strict=False))
    return used


def _free_subnet(prefix: str) -> ipaddress.IPv4Network:
    """A /24 of the pool that overlaps nothing the machine has, starting from one derived from the prefix."""
    subnets = list(_POOL.subnets(new_prefix=24))
    start = int(hashlib.sha256(prefix.encode()).hexdigest()[:8], 16) % len(subnets)
    used = used_networks()
    for step in range(len(subnets)):
        candidate = subnets[(start + step) % len(subnets)]
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise NetnsError(f"no free /24 in {_POOL} for the test hosts")


@dataclass(frozen=True)
class TestHost:
    """One host: its namespace, its address on the bridge and its veth end in the root namespace."""

    __test__ = False  # not a pytest test class, whatever its name

    name: str
    namespace: str
    address: str
    veth: str

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return [_ip_bin(), "netns", "exec", self.namespace, *argv]


@dataclass
class SshAccess:
    """What a client needs to reach the hosts' sshds: the user, its key (generated, owner-only) and a known_hosts
    file holding every host's key under its address."""

    user: str
    identity_file: Path
    known_hosts: Path

    @property
    def public_key(self) -> str:
        return Path(f"{self.identity_file}.pub").read_text().strip()


@dataclass
class HostNetwork:
    """A built set of test hosts. ``teardown`` (or leaving the ``with`` block) removes all of it."""

    prefix: str
    subnet: ipaddress.IPv4Network
    folder: Path
    hosts: dict[str, TestHost]
    ssh: SshAccess | None = None
    _children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: dict[int, Path] = field(default_factory=dict)
    _temp_dirs: list[Path] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return bridge_name(self.prefix)

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge: where the promoter's process is seen from the hosts."""
        return str(self.subnet.network_address + 1)

    def __getitem__(self, name: str) -> TestHost:
        return self.hosts[name]

    def __enter__(self) -> HostNetwork:
        return self

    def __exit__(self, *_: object) -> None:
        self.teardown()

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def build(cls, folder: Path, names: Sequence[str] = DEFAULT_HOSTS, prefix: str | None = None,
              ssh_hosts: Iterable[str] | None = None, ssh_user: str | None = None,
              kept: bool = False) -> HostNetwork:
        """The hosts ``names``, each with an sshd when in ``ssh_hosts`` (default: all). Leftovers of the same
        prefix are removed first; a failure part-way removes what was made and raises NetnsError. ``kept``: the
        network outlives the process building it (a sandbox's, removed by its ``down``), so ``clean_stale``
        leaves it alone."""
        prefix = prefix or prefix_for()
        if len(set(names)) != len(names) or not names:
            raise NetnsError(f"host names must be distinct and at least one: {list(names)}")
        if len(f"{prefix}v{len(names) - 1}") > IFNAMSIZ:
            raise NetnsError(f"prefix {prefix!r} too long for interface names of {IFNAMSIZ} characters")
        teardown_prefix(prefix)
        make_private_dirs(folder)
        _register(prefix, kept)
        net = None
        try:
            with _machine_lock():
                subnet = _free_subnet(prefix)
                bridge = bridge_name(prefix)
                ip("link", "add", bridge, "type", "bridge")
                ip("addr", "add", f"{subnet.network_address + 1}/{subnet.prefixlen}", "dev", bridge)
                ip("link", "set", bridge, "up")
            hosts = {}
            for index, name in enumerate(names):
                hosts[name] = _make_host(prefix, subnet, bridge, index, name)
            net = cls(prefix=prefix, subnet=subnet, folder=folder, hosts=hosts)
            wanted = list(names) if ssh_hosts is None else list(ssh_hosts)
            if wanted:
                net.ssh = _client_key(folder, ssh_user or pwd.getpwuid(os.geteuid()).pw_name)
                for name in wanted:
                    net.start_sshd(name)
            return net
        except BaseException:
            if net is not None:
                net.teardown()
            else:
                teardown_prefix(prefix)
            raise

    # -- processes -------------------------------------------------------------------------------
    def spawn(self, host: str, argv: Sequence[str], log: Path, user: str | None = None,
              env: dict[str, str] | None = None) -> int:
        """Start ``argv`` inside ``host``'s namespace, detached (its own session and process group), output to
        ``log``; as ``user`` when given (``setpriv``, which execs in place: the pid is the program's)."""
        as_user: list[str] = []
        if user:
            as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(self.hosts[host].exec_argv([*as_user, *argv]), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=env)
        self._children.append(proc)
        self._logs[proc.pid] = log
        return proc.pid

    def run(self, host: str, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``argv`` run to its end inside ``host``'s namespace."""
        return subprocess.run(self.hosts[host].exec_argv(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def _last_words(self, pid: int) -> str:
        """The last lines ``pid`` (one ``spawn`` started) wrote to its log, for the error saying it exited (HAProxy,
        for one, gives the cause a line before its closing "Fatal errors found")."""
        log = self._logs.get(pid)
        try:
            lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log else []
        except OSError:
            lines = []
        return f": {' | '.join(lines[-3:])[:500]}" if lines else ""

    def wait_listening(self, host: str, port: int, pid: int, timeout: float = 20) -> None:
        """Until ``host``'s address accepts TCP on ``port`` (from the root namespace), or the process exits."""
        address = self.hosts[host].address
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((address, port), timeout=1):
                    return
            except OSError:
                if not _alive(pid):
                    raise NetnsError(f"process {pid} in {host} exited before listening on {address}:{port}"
                                     f"{self._last_words(pid)}") from None
                time.sleep(0.05)
        raise NetnsError(f"nothing listened on {host} ({address}:{port}) within {timeout}s")

    # -- sshd --------------------------------------------------------------------------------------
    def host_dir(self, host: str) -> Path:
        return make_private_dirs(self.folder / "hosts" / host)

    def start_sshd(self, host: str, local_forwarding: bool = False) -> int:
        """An sshd inside ``host``'s namespace on its address, with a host key of its own, key-only login for
        the client key, its key added to the client's known_hosts. Returns once it accepts connections.
        ``local_forwarding``: clients may forward to the host's unix sockets (``ssh -L path:path``; OpenSSH gates
        those on AllowTcpForwarding too, so it is ``local`` then instead of ``no``)."""
        if self.ssh is None:
            raise NetnsError("no client key: build the network with ssh_hosts")
        address = self.hosts[host].address
        folder = make_private_dirs(self.host_dir(host) / "sshd")
        key = folder / "ssh_host_ed25519_key"
        if not key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.prefix}-{host}", "-f", str(key)],
                 f"ssh-keygen for {host}'s host key")
        write_private(folder / "authorized_keys", (self.ssh.public_key + "\n").encode())
        config = folder / "sshd_config"
        write_private(config, _sshd_config(address, folder, self.ssh.user, local_forwarding).encode())
        # sshd insists on its privilege-separation folder (the distribution's service makes it at boot).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        _run([SSHD, "-t", "-f", str(config)], f"sshd's check of {host}'s configuration")
        pid = self.spawn(host, [SSHD, "-D", "-e", "-f", str(config)], folder / "sshd.log")
        self.wait_listening(host, SSH_PORT, pid)
        known = Path(f"{key}.pub").read_text().split()
        lines = [ln for ln in (self.ssh.known_hosts.read_text().splitlines() if self.ssh.known_hosts.exists()
                               else []) if not ln.startswith(f"{address} ")]
        write_private(self.ssh.known_hosts, ("\n".join([*lines, f"{address} {known[0]} {known[1]}"]) + "\n").encode())
        return pid

    def ssh_argv(self, host: str, *command: str, known_hosts: Path | None = None) -> list[str]:
        """The OpenSSH client's argv to run ``command`` on ``host`` with the generated key (strict host keys)."""
        assert self.ssh is not None
        return ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known_hosts or self.ssh.known_hosts}", "-o", "GlobalKnownHostsFile=none",
                "-o", "IdentitiesOnly=yes", "-i", str(self.ssh.identity_file), "-o", "ConnectTimeout=10",
                # a host torn down under a session leaves no one to close its TCP connection: give up then
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-p", str(SSH_PORT), "-l", self.ssh.user, self.hosts[host].address, "--", *command]

    # -- PostgreSQL --------------------------------------------------------------------------------
    def start_postgres(self, host: str = "db", scram_users: Sequence[str] = (), port: int = PG_PORT) -> PgCluster:
        """A private PostgreSQL cluster inside ``host``'s namespace, listening on its address: trust for the
        subnet except ``scram_users``, who must give their password (scram-sha-256). Durability off: test data.
        Removed at teardown."""
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins:
            raise NetnsError("no PostgreSQL server is installed (/usr/lib/postgresql/*/bin)")
        # The postgres user must reach its folder: a folder of its own outside ours (which is root's, 0700).
        data = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-pg-"))
        self._temp_dirs.append(data)
        os.chown(data, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
        _run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", str(bins[-1] / "initdb"),
              "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=reject", "-E", "UTF8"],
             f"initdb for {host}")
        hba = [f"host all {user} {self.subnet} scram-sha-256" for user in scram_users]
        hba += [f"host all all {self.subnet} trust", "local all all trust"]
        pg_hba = data / "pg_hba.conf"
        pg_hba.write_text("\n".join(hba) + "\n")
        address = self.hosts[host].address
        pid = self.spawn(host, [str(bins[-1] / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data),
                                "-c", f"listen_addresses={address}", "-c", "fsync=off", "-c", "synchronous_commit=off",
                                "-c", "full_page_writes=off", "-c", "max_connections=100"],
                         data / "server.log", user="postgres")
        self.wait_listening(host, port, pid, timeout=60)
        # Listening comes before accepting: recovery at start-up answers "the database system is starting up".
        deadline = time.monotonic() + 60
        while subprocess.run([str(bins[-1] / "pg_isready"), "-q", "-h", address, "-p", str(port)]).returncode != 0:
            if time.monotonic() > deadline or not _alive(pid):
                raise NetnsError(f"PostgreSQL in {host} did not accept connections (log {data / 'server.log'})")
            time.sleep(0.1)
        return PgCluster(host=host, address=address, port=port, data=data, pid=pid)

    # -- teardown ----------------------------------------------------------------------------------
    def teardown(self) -> list[str]:
        """Every process in the namespaces stopped, the namespaces, veths and bridge removed, temporary folders
        gone. Idempotent. Returns what it found left over afterwards (empty: all gone)."""
        teardown_prefix(self.prefix)
        for proc in self._children:
            with contextlib.suppress(ChildProcessError, OSError):
                proc.wait(timeout=5)
        self._children.clear()
        for folder in self._temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        self._temp_dirs.clear()
        left = leftovers(self.prefix)
        if not left:
            (_REGISTRY / f"{self.prefix}.json").unlink(missing_ok=True)
        return left


@dataclass(frozen=True)
class PgCluster:
    host: str
    address: str
    port: int
    data: Path
    pid: int

    def dsn(self, user: str = "postgres", dbname: str = "postgres") -> str:
        return f"host={self.address} port={self.port} user={user} dbname={dbname} connect_timeout=5"


def bridge_name(prefix: str) -> str:
    return f"{prefix}br"


def _make_host(prefix: str, subnet: ipaddress.IPv4Network, bridge: str, index: int, name: str) -> TestHost:
    namespace, veth, peer = f"{prefix}-{name}", f"{prefix}v{index}", f"{prefix}p{index}"
    address = str(subnet.network_address + 10 + index)
    ip("netns", "add", namespace)
    ip("link", "add", veth, "type", "veth", "peer", "name", peer, "netns", namespace)
    ip("link", "set", veth, "master", bridge)
    ip("link", "set", veth, "up")
    ip("-n", namespace, "link", "set", peer, "name", "eth0")
    ip("-n", namespace, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", "eth0")
    ip("-n", namespace, "link", "set", "eth0", "up")
    ip("-n", namespace, "link", "set", "lo", "up")
    return TestHost(name=name, namespace=namespace, address=address, veth=veth)


def _client_key(folder: Path, user: str) -> SshAccess:
    keys = make_private_dirs(folder / "client")
    identity = keys / "id_ed25519"
    if not identity.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "promote-test-client", "-f", str(identity)],
             "ssh-keygen for the client key")
    known = keys / "known_hosts"
    write_private(known, b"")
    return SshAccess(user=user, identity_file=identity, known_hosts=known)


def _sshd_config(address: str, folder: Path, user: str, local_forwarding: bool = False) -> str:
    # StrictModes would refuse our files because the system's temporary folder above them is world-writable;
    # they are owner-only and in an owner-only folder, which is what it checks for.
    return "\n".join([
        f"ListenAddress {address}:{SSH_PORT}",
        f"HostKey {folder / 'ssh_host_ed25519_key'}",
        f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        f"AllowUsers {user}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitUserEnvironment no",
        "AllowAgentForwarding no",
        f"AllowTcpForwarding {'local' if local_forwarding else 'no'}",
        "X11Forwarding no",
        "PrintMotd no",
        # bash reads ~/.bashrc for a command run by sshd when SHLVL says it is the first shell; a developer's
        # (pyenv, nvm, ...) costs a second a call. The hosts' commands need none of it.
        "SetEnv SHLVL=1",
        "LogLevel VERBOSE",
        "",
    ])


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _namespaces(prefix: str) -> list[str]:
    out = ip("netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(f"{prefix}-")]


def _links(prefix: str) -> list[str]:
    out = ip("-j", "link", "show", check=False)
    return [link["ifname"] for link in json.loads(out or "[]") if str(link.get("ifname", "")).startswith(prefix)]


def _stop_namespace_processes(namespace: str, timeout: float = 10) -> None:
    """SIGTERM every process in the namespace, SIGKILL what is left after ``timeout``."""
    def pids() -> list[int]:
        return [int(p) for p in ip("netns", "pids", namespace, check=False).split() if p.isdigit()]

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_alive(p) for p in pids()):
            time.sleep(0.05)


def _checkout() -> str:
    return str(Path(__file__).resolve().parents[1])


def _register(prefix: str, kept: bool = False) -> None:
    make_private_dirs(_REGISTRY)
    me = {"pid": os.getpid(), "started": _started(os.getpid()), "checkout": _checkout(), "kept": kept}
    write_private(_REGISTRY / f"{prefix}.json", json.dumps(me).encode())


def _started(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def clean_stale() -> list[str]:
    """Remove the networks of this checkout whose building process is gone (a killed test run): the prefixes
    removed. Networks of live processes, kept ones (a sandbox's) and other checkouts' are left alone."""
    removed = []
    for entry in sorted(_REGISTRY.glob("pp*.json")) if _REGISTRY.is_dir() else []:
        try:
            owner = json.loads(entry.read_text())
        except (OSError, ValueError):
            owner = {}
        if owner.get("checkout") != _checkout() or owner.get("kept"):
            continue
        pid = owner.get("pid")
        if isinstance(pid, int) and _alive(pid) and _started(pid) == owner.get("started"):
            continue
        teardown_prefix(entry.stem)
        if not leftovers(entry.stem):
            entry.unlink(missing_ok=True)
            removed.append(entry.stem)
    return removed


def teardown_prefix(prefix: str) -> None:
    """Remove everything of ``prefix``: processes in its namespaces, the namespaces, its interfaces (veths
    and bridge). Safe on a partial build and when nothing is left."""
    if not prefix or len(prefix) < 4:
        raise NetnsError(f"refusing to remove by so short a prefix: {prefix!r}")
    for namespace in _namespaces(prefix):
        _stop_namespace_processes(namespace)
        ip("netns", "del", namespace, check=False)
    for link in _links(prefix):  # a veth whose namespace is gone went with it; the bridge stays until now
        ip("link", "del", link, check=False)


def remove_kept(prefix: str) -> list[str]:
    """Remove a kept network (``build(kept=True)``) from another process than the one that built it: everything of
    its prefix, and its registry entry once nothing is left. Returns what is left over (empty: all gone)."""
    teardown_prefix(prefix)
    left = leftovers(prefix)
    if not left:
        (_REGISTRY / f"{prefix}.json").unlink(missing_ok=True)
    return left


def leftovers(prefix: str) -> list[str]:
    """Namespaces and interfaces of ``prefix`` that still exist."""
    return [f"namespace {n}" for n in _namespaces(prefix)] + [f"interface {n}" for n in _links(prefix)]
