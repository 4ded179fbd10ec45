#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml with pip-compile (pip-tools):
#   requirements/runtime.lock  the runtime dependencies (scripts/demo.sh installs these)
#   requirements/dev.lock      runtime + dev extras (scripts/test.sh, CI), constrained to
#                              the runtime lock so both agree on every shared package
# Existing pins are kept unless pyproject.toml no longer allows them; pass --upgrade to
# move everything to the newest allowed versions, or --upgrade-package NAME for one.
# Run it after changing dependencies in pyproject.toml and commit the lock files.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

PIP_TOOLS_VERSION="7.7.0"
python="$(find_python)" || die "Python 3.11 is required (python3.11 not found)"
TOOLS="$(mktemp -d /tmp/ekv-admin-lock.XXXXXX)"
trap 'rm -rf "$TOOLS"' EXIT
log "pip-tools $PIP_TOOLS_VERSION in $TOOLS"
"$python" -m venv "$TOOLS/venv"
"$TOOLS/venv/bin/pip" install -q "pip-tools==$PIP_TOOLS_VERSION"

compile() {
  CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" \
  "$TOOLS/venv/bin/pip-compile" -q --strip-extras --allow-unsafe --generate-hashes \
    --no-emit-find-links "$@" pyproject.toml
}
log "requirements/runtime.lock"
compile -o requirements/runtime.lock "$@"
log "requirements/dev.lock"
compile --extra dev -c requirements/runtime.lock -o requirements/dev.lock "$@"
