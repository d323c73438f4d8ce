#!/usr/bin/env bash
# The Dagster UI for the sandbox: dagster-webserver and dagster-daemon on a real instance
# (the repository's dagster.yaml: PostgreSQL storage, queued runs, run monitoring), loopback only.
#
#   scripts/ui.sh up       start both (idempotent); ready when the webserver answers and every
#                          daemon the instance requires has sent a heartbeat since this start
#   scripts/ui.sh down     stop both (SIGTERM to each process group, SIGKILL after UI_STOP_TIMEOUT s)
#   scripts/ui.sh status   what runs; exit 0 when both run, 1 otherwise
#
# Environment:
#   DAGSTER_PORT     webserver port on 127.0.0.1 (default 3000)
#   DAGSTER_PG_DB    database of Dagster's run, event and schedule storage (default dagster_sandbox),
#                    created on PGHOST:PGPORT (default 127.0.0.1:5432, user postgres) when missing
#   PROMOTE_SETTINGS settings of the code location; default .sandbox/settings.json when it exists
#                    (neither: the code location fails to load, with one line saying what to write)
#   UI_DAGSTER_HOME  instance folder (default .sandbox/dagster_home): dagster.yaml (a symlink to the
#                    repository's), dagster_pg_url (its storage, for `promote run`), the processes' logs in
#                    ui_logs/, their pid files *.pid
#   UI_READY_TIMEOUT seconds to wait for each of webserver and daemon (default 60)
#   UI_STOP_TIMEOUT  seconds to wait after SIGTERM (default 20)
#   DAGSTER_GRPC_TIMEOUT_SECONDS  Dagster's patience with its code server (default here 180; Dagster's own 60)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_BIN="$REPO/.venv/bin"
HOME_DIR="${UI_DAGSTER_HOME:-$REPO/.sandbox/dagster_home}"
# Not $DAGSTER_HOME/logs: that is Dagster's telemetry spool, whose uploader thread (started by the
# webserver and the daemon whatever `telemetry: enabled` says) moves it to .logs_queue, posts the
# files to telemetry.dagster.io and deletes them. DAGSTER_DISABLE_TELEMETRY (below) stops it.
LOG_DIR="$HOME_DIR/ui_logs"
WORKSPACE="$REPO/workspace.yaml"
PORT="${DAGSTER_PORT:-3000}"
PG_HOST="${PGHOST:-127.0.0.1}"
PG_PORT="${PGPORT:-5432}"
PG_DB="${DAGSTER_PG_DB:-dagster_sandbox}"
READY_TIMEOUT="${UI_READY_TIMEOUT:-60}"
STOP_TIMEOUT="${UI_STOP_TIMEOUT:-20}"
URL="http://127.0.0.1:$PORT"
SERVICES=(webserver daemon)

say() { echo "ui: $*"; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
die() { echo "ui: $*" >&2; exit 1; }

pid_file() { echo "$HOME_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }
binary_of() { case "$1" in webserver) echo dagster-webserver ;; daemon) echo dagster-daemon ;; esac; }

# Whether pid is the named service of this instance: its command line, DAGSTER_HOME in its
# environment, and leader of its own process group (as start_service made it).
is_ours() {
  local name="$1" pid="$2" cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ "$cmdline" == *"$(binary_of "$name")"* && "$cmdline" == *"$WORKSPACE"* ]] || return 1
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "DAGSTER_HOME=$HOME_DIR" || return 1
  [ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ]
}

# The live pid of a service: from its pid file, or else found among the processes (the pid file
# is gone when `promote sandbox down` removed .sandbox under a running UI); the pid file is
# rewritten then. A stale pid file whose number now belongs to another process is ignored.
live_pid() {
  local name="$1" file pid
  file="$(pid_file "$name")"
  pid="$(cat "$file" 2>/dev/null || true)"
  if ! is_ours "$name" "$pid"; then
    pid=""
    local candidate
    for candidate in $(pgrep -f -- "$(binary_of "$name")" || true); do
      if is_ours "$name" "$candidate"; then pid="$candidate"; break; fi
    done
    [ -n "$pid" ] || return 1
    mkdir -p "$HOME_DIR" && echo "$pid" >"$file"
  fi
  echo "$pid"
}

# Any process left in the group (the service was started as a session and group leader).
group_alive() { kill -0 -- "-$1" 2>/dev/null; }

server_answers() { curl -fsS -m 2 -o /dev/null "$URL/server_info" 2>/dev/null; }

graphql() {
  curl -fsS -m 5 -H 'Content-Type: application/json' --data "{\"query\": \"$1\"}" "$URL/graphql" 2>/dev/null
}

# Reads daemonHealth JSON on stdin; prints one line per daemon; exit 0 when every required daemon
# is healthy with a heartbeat at or after $1 (a stale heartbeat of a previous daemon process stays
# "healthy" for 30 minutes in Dagster's eyes, so health alone proves nothing right after a start).
daemon_report() {
  "$VENV_BIN/python" -c '
import json, sys
since = float(sys.argv[1])
try:
    statuses = json.load(sys.stdin)["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
except Exception:
    print("  (no daemon status from GraphQL)")
    sys.exit(1)
ready = True
for s in statuses:
    if not s["required"]:
        continue
    fresh = s["lastHeartbeatTime"] is not None and s["lastHeartbeatTime"] >= since
    ok = bool(s["healthy"]) and fresh
    ready = ready and ok
    state = "healthy" if ok else ("stale heartbeat" if s["healthy"] else "no heartbeat")
    print("  %-24s %s" % (s["daemonType"], state))
sys.exit(0 if ready else 1)
' "$1"
}

DAEMON_QUERY='{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy lastHeartbeatTime } } } }'

ensure_database() {
  [[ "$PG_DB" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "DAGSTER_PG_DB must be a plain identifier, not '$PG_DB'"
  local psql=(psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -At)
  if ! "${psql[@]}" -c 'SELECT 1' >/dev/null 2>&1; then
    # No server: start the sandbox's private cluster, as `promote sandbox up` does.
    say "no PostgreSQL answers at $PG_HOST:$PG_PORT; starting the sandbox's private cluster"
    "$VENV_BIN/python" -c 'import sys; from pathlib import Path
from promote_pipeline.cli.sandbox import ensure_postgres
ensure_postgres(Path(sys.argv[1]))' "$REPO/.sandbox" \
      || die "no PostgreSQL at $PG_HOST:$PG_PORT (set PGHOST/PGPORT, or run 'promote sandbox up')"
  fi
  if [ -z "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" ]; then
    "${psql[@]}" -c "CREATE DATABASE \"$PG_DB\"" >/dev/null
    say "created database $PG_DB on $PG_HOST:$PG_PORT"
    CREATED_DATABASE=1
  fi
}

# Dagster's tables made once, before the webserver and the daemon start: each creates the tables it finds
# missing when it opens the instance, and the two starting together on an empty database raced to create the
# same ones ("type ... already exists"; the loser exited).
create_tables() {
  [ "${CREATED_DATABASE:-0}" = 1 ] || return 0
  "$VENV_BIN/dagster" instance migrate >"$LOG_DIR/instance-migrate.log" 2>&1 \
    || { tail -n 20 "$LOG_DIR/instance-migrate.log" >&2; die "could not create Dagster's tables in $PG_DB"; }
  say "created Dagster's tables in $PG_DB"
}

start_service() {
  local name="$1" log pid
  log="$(log_file "$name")"
  [ -f "$log" ] && mv -f "$log" "$log.1"
  local cmd
  case "$name" in
    webserver) cmd=("$VENV_BIN/dagster-webserver" -h 127.0.0.1 -p "$PORT" -w "$WORKSPACE") ;;
    daemon) cmd=("$VENV_BIN/dagster-daemon" run -w "$WORKSPACE") ;;
  esac
  # setsid: a session and process group of its own (pid = pgid), so `down` reaches the code
  # servers it spawns too, and no terminal hangup reaches it.
  (cd "$REPO" && exec setsid nohup "${cmd[@]}" </dev/null >"$log" 2>&1) &
  pid=$!
  echo "$pid" >"$(pid_file "$name")"
  say "started $name (pid $pid, log $log)"
}

fail_with_log() {
  echo "ui: $1; last lines of $(log_file "$2"):" >&2
  tail -n 30 "$(log_file "$2")" >&2 || true
  echo "ui: what did start keeps running; 'scripts/ui.sh down' stops it" >&2
  exit 1
}

cmd_up() {
  [ -x "$VENV_BIN/dagster-webserver" ] || die "no $VENV_BIN/dagster-webserver: run 'make deps' first"
  mkdir -p "$HOME_DIR" "$LOG_DIR"
  ln -sfn "$REPO/dagster.yaml" "$HOME_DIR/dagster.yaml"
  ensure_database

  export DAGSTER_HOME="$HOME_DIR"
  export DAGSTER_PG_URL="postgresql+psycopg2://postgres@$PG_HOST:$PG_PORT/$PG_DB"
  # `promote run` (in process, no webserver) records its runs on this instance when it finds this file beside
  # the dagster.yaml link, so the UI lists them too (promote_pipeline/defs/in_process.py).
  printf '%s\n' "$DAGSTER_PG_URL" >"$HOME_DIR/dagster_pg_url"
  if [ -z "${PROMOTE_SETTINGS:-}" ] && [ -f "$REPO/.sandbox/settings.json" ]; then
    export PROMOTE_SETTINGS="$REPO/.sandbox/settings.json"
  fi
  export DAGSTER_DISABLE_TELEMETRY=1
  # The daemon launches a queued run by asking the code server to start its worker, and that call returns only
  # once the new worker process has imported the code location: on a loaded two-core machine, with several
  # promotions dequeued at once, that took longer than Dagster's default 60 s and the run failed before its
  # first step (bench/many_environments.py met it). Longer patience, never a failure for slowness alone.
  export DAGSTER_GRPC_TIMEOUT_SECONDS="${DAGSTER_GRPC_TIMEOUT_SECONDS:-180}"
  export PATH="$VENV_BIN:$PATH"
  create_tables

  local started_at webserver_pid daemon_pid deadline t0="$EPOCHREALTIME"
  started_at="$(date +%s)"
  if webserver_pid="$(live_pid webserver)"; then
    say "webserver already running (pid $webserver_pid)"
  else
    server_answers && die "something else answers at $URL (set DAGSTER_PORT)"
    start_service webserver
    webserver_pid="$(cat "$(pid_file webserver)")"
  fi
  if daemon_pid="$(live_pid daemon)"; then
    say "daemon already running (pid $daemon_pid)"
    started_at=0  # its heartbeats predate this call
  else
    start_service daemon
    daemon_pid="$(cat "$(pid_file daemon)")"
  fi

  deadline=$((SECONDS + READY_TIMEOUT))
  until server_answers; do
    kill -0 "$webserver_pid" 2>/dev/null || fail_with_log "the webserver exited" webserver
    [ "$SECONDS" -lt "$deadline" ] || fail_with_log "the webserver did not answer within ${READY_TIMEOUT}s" webserver
    sleep 0.5
  done
  say "webserver answers at $URL/server_info ($(elapsed "$t0")s)"

  deadline=$((SECONDS + READY_TIMEOUT))
  until graphql "$DAEMON_QUERY" | daemon_report "$started_at" >/dev/null; do
    kill -0 "$daemon_pid" 2>/dev/null || fail_with_log "the daemon exited" daemon
    if [ "$SECONDS" -ge "$deadline" ]; then
      graphql "$DAEMON_QUERY" | daemon_report "$started_at" >&2 || true
      fail_with_log "the daemons did not all report healthy within ${READY_TIMEOUT}s" daemon
    fi
    sleep 1
  done
  say "daemons healthy ($(elapsed "$t0")s):"
  graphql "$DAEMON_QUERY" | daemon_report "$started_at" || true
  say "Dagster UI: $URL  (instance $HOME_DIR, database $PG_DB on $PG_HOST:$PG_PORT)"
}

stop_service() {
  local name="$1" pid t0 deadline
  if ! pid="$(live_pid "$name")"; then
    rm -f "$(pid_file "$name")"
    say "$name not running"
    return 0
  fi
  t0="$EPOCHREALTIME"
  deadline=$((SECONDS + STOP_TIMEOUT))
  kill -TERM -- "-$pid" 2>/dev/null || true
  while group_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.1
  done
  if group_alive "$pid"; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    say "$name (pid $pid) did not stop within ${STOP_TIMEOUT}s after SIGTERM: sent SIGKILL"
  else
    say "$name (pid $pid) stopped on SIGTERM in $(elapsed "$t0")s"
  fi
  rm -f "$(pid_file "$name")"
}

cmd_down() {
  # Both at once: SIGTERM to both groups, then wait for each.
  local name
  for name in daemon webserver; do stop_service "$name" & done
  wait
}

cmd_status() {
  local name pid all=0
  for name in "${SERVICES[@]}"; do
    if pid="$(live_pid "$name")"; then
      say "$name running (pid $pid, log $(log_file "$name"))"
    else
      say "$name not running"
      all=1
    fi
  done
  if server_answers; then
    say "webserver answers at $URL"
    if live_pid daemon >/dev/null; then
      say "daemons (as Dagster judges them: a heartbeat within the last 30 minutes):"
      graphql "$DAEMON_QUERY" | daemon_report 0 || true
    fi
  else
    say "nothing answers at $URL"
  fi
  return "$all"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 up|down|status" ;;
esac
