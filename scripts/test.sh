#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs, starts private
# PostgreSQL and Redis instances on free ports in a temporary directory, runs
# ruff, mypy and every test tier (unit, gRPC integration, PostgreSQL + Redis,
# browser), and removes the instances afterwards. Extra arguments go to pytest.
# Under CI=true a skipped tier is a failure (see tests/conftest.py).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_venv dev
ensure_debian_packages postgresql || log "PostgreSQL unavailable: the services tier will not run"
ensure_debian_packages redis-server || log "Redis unavailable: the services tier will not run"
ensure_debian_packages chromium fonts-dejavu-core || log "Chromium unavailable: the browser tier will not run"
ensure_debian_packages nodejs || log "Node.js unavailable: the JavaScript unit tests will not run"

WORK="$(mktemp -d /tmp/ekv-admin-test.XXXXXX)"
chmod 755 "$WORK"
PG_CTL="" PGDATA="$WORK/pg" REDIS_PID="$WORK/redis.pid"
cleanup() {
  [ -n "$PG_CTL" ] && as_pg "$PG_CTL" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
  [ -f "$REDIS_PID" ] && kill "$(cat "$REDIS_PID")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# initdb refuses to run as root: run the server as the postgres user then.
as_pg() {
  if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -x "$bin/initdb" ] || bin="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")"
  [ -x "$bin/initdb" ] || return 1
  if [ "$(id -u)" = "0" ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --no-create-home postgres
  fi
  mkdir -p "$PGDATA" && [ "$(id -u)" = "0" ] && chown postgres "$PGDATA" "$WORK"
  local port; port="$(free_port)"
  as_pg "$bin/initdb" -D "$PGDATA" -U ekv --auth=trust -E UTF8 >"$WORK/initdb.log" 2>&1 || return 1
  as_pg "$bin/pg_ctl" -D "$PGDATA" -l "$WORK/pg.log" -w \
    -o "-p $port -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
    start >/dev/null || return 1
  PG_CTL="$bin/pg_ctl"
  "$bin/psql" -q -h 127.0.0.1 -p "$port" -U ekv -d postgres -c "CREATE DATABASE ekv_admin" >/dev/null
  export ELASTICKV_ADMIN_TEST_POSTGRES_URL="postgres://ekv@127.0.0.1:$port/ekv_admin"
  log "PostgreSQL on 127.0.0.1:$port"
}

start_redis() {
  command -v redis-server >/dev/null 2>&1 || return 1
  local port; port="$(free_port)"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$REDIS_PID" --logfile "$WORK/redis.log" --dir "$WORK" >/dev/null || return 1
  for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  export ELASTICKV_ADMIN_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
  log "Redis on 127.0.0.1:$port"
}

start_postgres || log "could not start PostgreSQL (see $WORK/initdb.log, $WORK/pg.log)"
start_redis || log "could not start Redis"
[ -x /usr/bin/chromium ] && export ELASTICKV_ADMIN_TEST_CHROMIUM=/usr/bin/chromium

# timed NAME CMD...: run CMD and note its wall time and outcome under NAME for the summary
# at the end; a failure fails the run. pytest's exit 5 (it ran nothing) is a failure too.
TIMES="$WORK/times"
: > "$TIMES"
timed() {
  local name="$1"; shift
  local start=$SECONDS rc=0
  "$@" || rc=$?
  [ "$rc" -eq 5 ] && [ "$1" = "$VENV/bin/pytest" ] && log "'$name' collected no tests"
  printf '%-46s %5ss  %s\n' "$name" "$((SECONDS - start))" \
    "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)")" >> "$TIMES"
  return "$rc"
}

# pytest-xdist workers for the unit, integration and browser run: one more than the cores,
# as the tests also wait (gRPC deadlines, subprocesses, the browser); more starve the
# timing-sensitive ones on a busy machine. PYTEST_WORKERS overrides; 0 runs in one process.
# loadscope: a module's tests stay on one worker, so module fixtures (a browser, a built
# wheel, a running demo) are built once.
cores="$(nproc 2>/dev/null || echo 2)"
WORKERS="${PYTEST_WORKERS:-$(( cores + 1 > 8 ? 8 : cores + 1 ))}"
xdist=()
[ "$WORKERS" -gt 0 ] && xdist=(-n "$WORKERS" --dist loadscope)

# ruff and mypy only read files: they run beside pytest, their output is shown after it.
lint() {
  local rc=0
  timed "ruff check" "$VENV/bin/ruff" check . || rc=1
  timed "ruff format --check" "$VENV/bin/ruff" format --check . || rc=1
  timed "mypy (strict)" "$VENV/bin/mypy" . || rc=1
  return "$rc"
}
log "ruff and mypy (in the background; output after pytest)"
lint > "$WORK/lint.log" 2>&1 &
lint_pid=$!

# The same settings code on real PostgreSQL and Redis, in one process (its tests share the
# Redis server's numbered databases), beside the SQLite run: it mostly waits on the portal
# processes it starts. Its output follows the SQLite run's.
log "pytest: services (PostgreSQL + Redis; in the background, output after the SQLite run)"
DATABASE_URL="${ELASTICKV_ADMIN_TEST_POSTGRES_URL:-}" REDIS_URL="${ELASTICKV_ADMIN_TEST_REDIS_URL:-}" \
  timed "pytest: services (PostgreSQL + Redis)" "$VENV/bin/pytest" -m services "$@" \
  > "$WORK/services.log" 2>&1 &
services_pid=$!

status=0
log "pytest: unit + integration + browser (SQLite, $WORKERS workers)"
timed "pytest: unit + integration + browser" \
  "$VENV/bin/pytest" -m "not services" "${xdist[@]}" "$@" || status=1
wait "$services_pid" || status=1
log "pytest: services (PostgreSQL + Redis)"
cat "$WORK/services.log"

# The browser's pure ES modules (static/js/timefmt.js, ...), under a non-UTC zone so
# local time and UTC differ.
if command -v node >/dev/null 2>&1; then
  log "node --test tests/js"
  TZ=Asia/Tokyo timed "node --test tests/js" node --test tests/js || status=1
elif [ "${CI:-}" = "true" ]; then
  log "node not found: under CI=true the JavaScript tests must run"; status=1
else
  log "node not found: the JavaScript unit tests did not run"
fi

wait "$lint_pid" || status=1
log "ruff and mypy"
cat "$WORK/lint.log"

log "time per tier (wall clock; ruff, mypy and the services run ran beside the SQLite run)"
cat "$TIMES" >&2
printf '%-46s %5ss\n' "total" "$SECONDS" >&2
if [ "$status" -eq 0 ]; then log "all checks passed"; else log "FAILED"; fi
exit "$status"
