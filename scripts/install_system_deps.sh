#!/usr/bin/env bash
# Installs the system tools a promotion drives, from Debian's packages, only where missing:
# HAProxy and nginx (the routers), PgBouncer (each deployment's database endpoint), zstd (filestore
# archives), the PostgreSQL client tools
# (pg_dump, pg_restore, psql) and server binaries (initdb, pg_ctl: the test suite's own cluster), Chromium (the headless browser of the UI's end-to-end test,
# tests/e2e/), and iproute2 with the OpenSSH server and client (the test hosts: network namespaces, each
# with an sshd of its own; resources/netns_hosts.py). The distribution's own haproxy/nginx services are
# stopped again after installation, and its ssh service when this script installed it: the project runs
# private instances on loopback ports or inside its own namespaces.
set -euo pipefail

missing() {
  need=()
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
  [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null 2>&1 || need+=(pgbouncer)
  command -v zstd >/dev/null 2>&1 || need+=(zstd)
  command -v pg_dump >/dev/null 2>&1 || need+=(postgresql-client)
  # The server binaries (initdb, pg_ctl): the test suite runs a PostgreSQL cluster of its own.
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v zip >/dev/null 2>&1 || need+=(zip)       # the benchmark's Odoo database-manager pipeline
  command -v unzip >/dev/null 2>&1 || need+=(unzip)
  command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
}

missing
[ ${#need[@]} -eq 0 ] && exit 0

# Two checkouts installing at once (two `make test`s on a fresh machine) would race for apt's locks, and
# `apt-get update` fails at once on the lists lock whatever DPkg::Lock::Timeout says: take turns, then
# look again, since the other may have installed what this one was missing.
exec 9>/tmp/promote-pipeline-system-deps.lock
flock -w 900 9 || { echo "install_system_deps: another installation held the lock for 15 minutes" >&2; exit 1; }
missing
[ ${#need[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing from Debian's packages: ${need[*]}"
# Another apt-get (unattended-upgrades, a second shell) may hold the dpkg lock: wait for it, up to
# five minutes, instead of failing at once.
APT_WAIT=(-o DPkg::Lock::Timeout=300)
$SUDO apt-get "${APT_WAIT[@]}" update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${APT_WAIT[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null
for service in haproxy nginx pgbouncer; do  # (not postgresql: the machine's server may be in use)
  $SUDO service "$service" stop >/dev/null 2>&1 || true
done
# The package starts a machine-wide sshd on port 22: stop it when this script brought it (one that was there
# before is the machine's, perhaps how people reach it, and stays as it was).
if [[ " ${need[*]} " == *" openssh-server "* ]]; then
  $SUDO service ssh stop >/dev/null 2>&1 || true
fi
