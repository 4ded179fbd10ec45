# Shared by scripts/demo.sh and scripts/test.sh: a virtual environment with the
# project installed, and Debian packages installed when missing (as root).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ELASTICKV_ADMIN_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

# ensure_venv EXTRAS: create or reuse the venv; reinstall only when pyproject.toml changed.
ensure_venv() {
  local extras="$1" stamp="$VENV/.installed-$1" want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ ! -x "$PY" ]; then
    local python
    python="$(find_python)" || die "Python 3.11 is required (python3.11 not found)"
    log "creating virtual environment in $VENV"
    "$python" -m venv "$VENV" || die "could not create $VENV (is python3-venv installed?)"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Python packages ($extras) into $VENV"
    local target="$ROOT" pip_log="$VENV/pip-install.log"
    [ "$extras" = "base" ] || target="$ROOT[$extras]"
    { "$PY" -m pip install --upgrade pip && "$PY" -m pip install -e "$target"; } >"$pip_log" 2>&1 ||
      { tail -n 30 "$pip_log" >&2; die "pip install failed (full log: $pip_log)"; }
    echo "$want" > "$stamp"
  fi
}

APT_UPDATED=""
# ensure_debian_packages PKG...: install what is missing when we are root; else report.
ensure_debian_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    log "missing Debian packages (not root, cannot install): ${missing[*]}"
    return 1
  fi
  if [ -z "$APT_UPDATED" ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || return 1
    APT_UPDATED=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
