#!/usr/bin/env bash
# The seed's validation command, as a thin wrapper over the promote CLI: promote verify-staging "$@".
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
promote="$here/.venv/bin/promote"
[ -x "$promote" ] || promote="promote"
exec "$promote" verify-staging "$@"
