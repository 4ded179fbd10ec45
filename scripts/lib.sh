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

# lock_of EXTRAS: the lock file for "base" (runtime) or an extra (dev); lock_stamp EXTRAS:
# what the venv records after installing it (changes with pyproject.toml or the lock).
lock_of() {
  if [ "$1" = "base" ]; then echo "$ROOT/requirements/runtime.lock"; else echo "$ROOT/requirements/$1.lock"; fi
}
lock_stamp() {
  echo "$1 $(cat "$ROOT/pyproject.toml" "$(lock_of "$1")" | sha256sum | cut -d' ' -f1)"
}

# ensure_venv EXTRAS: create or reuse the venv holding exactly the locked versions
# (requirements/runtime.lock for "base", requirements/EXTRAS.lock otherwise; regenerate
# them with scripts/lock.sh) and the project itself, editable, without dependencies.
# Reinstalls only when pyproject.toml or the lock changed; a current dev install also
# serves "base" (dev.lock is runtime.lock plus the dev tools).
ensure_venv() {
  local extras="$1" stamp="$VENV/.installed" lock have
  lock="$(lock_of "$extras")"
  [ -f "$lock" ] || die "no lock file $lock"
  if [ ! -x "$PY" ]; then
    local python
    python="$(find_python)" || die "Python 3.11 is required (python3.11 not found)"
    log "creating virtual environment in $VENV"
    "$python" -m venv "$VENV" || die "could not create $VENV (is python3-venv installed?)"
  fi
  have="$(cat "$stamp" 2>/dev/null || true)"
  [ "$have" = "$(lock_stamp "$extras")" ] && return 0
  [ "$extras" = "base" ] && [ -f "$(lock_of dev)" ] && [ "$have" = "$(lock_stamp dev)" ] && return 0
  log "installing Python packages from ${lock#"$ROOT"/} into $VENV"
  rm -f "$stamp"
  local pip_log="$VENV/pip-install.log"
  # The lock carries hashes, so pip checks every download. Packages the lock does not
  # list (left from an older lock) are removed, and `pip check` fails when pyproject.toml
  # asks for something the lock does not satisfy (scripts/lock.sh was not run). A venv
  # holds one lock at a time: "dev" after "base" adds the tools, "base" after a stale
  # "dev" removes them.
  { "$PY" -m pip install --upgrade pip &&
    "$PY" -m pip install --require-hashes -r "$lock" &&
    "$PY" -m pip install --no-deps -e "$ROOT" &&
    "$PY" - "$lock" <<'PRUNE' &&
import re, subprocess, sys
from importlib.metadata import distributions
def norm(name): return re.sub(r"[-_.]+", "-", name).lower()
with open(sys.argv[1]) as lock:
    keep = {norm(re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0]) for line in lock if line[:1].isalnum()}
keep |= {"pip", "setuptools", "wheel", "elastickv-admin"}
extra = sorted({norm(d.metadata["Name"]) for d in distributions()} - keep)
if extra:
    print("removing packages the lock does not list:", *extra)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "uninstall", "-y", *extra], check=True)
    # A removed package may have owned files a locked one shares (grpc-stubs and
    # types-grpcio both ship grpc-stubs/): put the locked ones back whole.
    subprocess.run([*pip, "install", "--force-reinstall", "--no-deps", "-r", sys.argv[1]], check=True)
PRUNE
    "$PY" -m pip check; } >"$pip_log" 2>&1 ||
    { tail -n 30 "$pip_log" >&2; die "pip install failed (full log: $pip_log; after changing pyproject.toml run scripts/lock.sh)"; }
  lock_stamp "$extras" > "$stamp"
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
