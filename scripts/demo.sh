#!/usr/bin/env bash
# The demo, from a clean clone: a virtual environment with the portal installed,
# then `elastickv-admin demo` (a local 3-node devcluster plus the portal on
# http://127.0.0.1:8000). Extra arguments go to `elastickv-admin demo`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_venv base
exec "$VENV/bin/elastickv-admin" demo "$@"
