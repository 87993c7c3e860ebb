#!/usr/bin/env bash
# A local Argilla stack for development and tests: Redis, osmem (in-memory OpenSearch-compatible
# search engine), the Argilla server (SQLite), all on 127.0.0.1.
#
#   scripts/argilla.sh start    install what is missing, start, create users, write credentials
#   scripts/argilla.sh stop     stop what `start` started (pid files), nothing else
#   scripts/argilla.sh status   say what runs; exit 0 when the server answers
#   scripts/argilla.sh ui-deps  install Debian chromium + playwright (into .argilla-venv) for the UI test
#
# State lives in $ARGILLA_STATE (default outputs/argilla/): pid files, logs, the SQLite database,
# credentials.json (URL, owner API key, users). osmem keeps its index in memory: `start` rebuilds
# it from SQLite (argilla_server search-engine reindex), so datasets survive a stop/start.
# The server runs in its own virtualenv (.argilla-venv/) because its pins conflict with ours.
# Ports: free ones are picked at start unless ARGILLA_PORT / ARGILLA_OSMEM_PORT / ARGILLA_REDIS_PORT
# are set. Use a real Argilla instead by exporting ARGILLA_API_URL and ARGILLA_API_KEY.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
STATE="${ARGILLA_STATE:-$ROOT/outputs/argilla}"
VENV="${ARGILLA_VENV:-$ROOT/.argilla-venv}"
PY="${PYTHON:-python3}"
mkdir -p "$STATE"

log() { echo "argilla.sh: $*" >&2; }

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

install() {
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server (apt-get)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  fi
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import argilla_server, osmem_server" 2>/dev/null; then
    log "installing argilla-server 2.8.0 + osmem-server into $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "argilla-server==2.8.0" "osmem-server" "click<8.2"
  fi
}

server_env() {
  export ARGILLA_HOME_PATH="$STATE/home"
  export ARGILLA_DATABASE_URL="sqlite+aiosqlite:///$STATE/argilla.db?check_same_thread=False"
  export ARGILLA_SEARCH_ENGINE=opensearch
  export ARGILLA_ELASTICSEARCH="http://127.0.0.1:$(cat "$STATE/osmem.port")"
  export ARGILLA_REDIS_URL="redis://127.0.0.1:$(cat "$STATE/redis.port")/0"
  export ARGILLA_ENABLE_TELEMETRY=0 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
  mkdir -p "$ARGILLA_HOME_PATH"
}

wait_http() {  # URL SECONDS [PIDNAME]: poll until the URL answers; give up early if PIDNAME died
  "$PY" - "$1" "$2" "$STATE/${3:-none}.pid" <<'PYEOF'
import os, sys, time, urllib.request
url, limit, pidfile = sys.argv[1], float(sys.argv[2]), sys.argv[3]
end = time.monotonic() + limit
while time.monotonic() < end:
    try:
        urllib.request.urlopen(url, timeout=2)
        sys.exit(0)
    except Exception:
        pass
    if os.path.exists(pidfile):
        try:
            os.kill(int(open(pidfile).read()), 0)
        except (OSError, ValueError):
            sys.exit(1)
    time.sleep(0.2)
sys.exit(1)
PYEOF
}

start() {
  if alive server && [ -f "$STATE/credentials.json" ]; then
    log "already running at $(cat "$STATE/server.url")"
    return 0
  fi
  local t0=$SECONDS
  install
  # Redis: reuse one that answers on ARGILLA_REDIS_PORT, else start ours (and only ours is stopped).
  if ! alive redis; then
    local rport="${ARGILLA_REDIS_PORT:-$(free_port)}"
    echo "$rport" >"$STATE/redis.port"
    if redis-cli -h 127.0.0.1 -p "$rport" ping >/dev/null 2>&1; then
      log "reusing the Redis on port $rport"
    else
      redis-server --bind 127.0.0.1 --port "$rport" --save "" --appendonly no \
        --dir "$STATE" >"$STATE/redis.log" 2>&1 &
      echo $! >"$STATE/redis.pid"
    fi
  fi
  if ! alive osmem; then
    local oport="${ARGILLA_OSMEM_PORT:-$(free_port)}"
    echo "$oport" >"$STATE/osmem.port"
    local osmem_bin
    osmem_bin="$("$VENV/bin/python" -c "import osmem_server; print(osmem_server.resolve_binary())")"
    "$osmem_bin" -addr "127.0.0.1:$oport" \
      -no-stdin-watch >"$STATE/osmem.log" 2>&1 &
    echo $! >"$STATE/osmem.pid"
    wait_http "http://127.0.0.1:$oport/" 30 osmem || { log "osmem did not start: see $STATE/osmem.log"; exit 1; }
  fi
  server_env
  local had_db=""
  [ -f "$STATE/argilla.db" ] && had_db=1
  "$VENV/bin/python" -m argilla_server database migrate >"$STATE/migrate.log" 2>&1 \
    || { log "database migration failed: see $STATE/migrate.log"; exit 1; }
  if [ -n "$had_db" ]; then  # osmem starts empty: rebuild its index from SQLite
    "$VENV/bin/python" -m argilla_server search-engine reindex >"$STATE/reindex.log" 2>&1 \
      || { log "search-engine reindex failed: see $STATE/reindex.log"; exit 1; }
  fi
  local port="${ARGILLA_PORT:-$(free_port)}"
  local url="http://127.0.0.1:$port"
  echo "$url" >"$STATE/server.url"
  "$VENV/bin/python" "$ROOT/scripts/argilla_launch.py" 127.0.0.1 "$port" >"$STATE/server.log" 2>&1 &
  echo $! >"$STATE/server.pid"
  wait_http "$url/api/v1/version" 120 server || { log "the Argilla server did not answer: see $STATE/server.log"; stop; exit 1; }
  users
  log "Argilla at $url (owner key in $STATE/credentials.json) in $((SECONDS - t0)) s"
}

users() {
  # Keys and passwords are local to this throwaway stack (127.0.0.1 only); kept between restarts.
  if [ ! -f "$STATE/secrets.env" ]; then
    "$PY" - >"$STATE/secrets.env" <<'PYEOF'
import secrets
print(f"OWNER_KEY=owner.{secrets.token_hex(16)}")
for u in ("owner", "annotator1", "annotator2"):
    print(f"{u.upper()}_PASSWORD={secrets.token_hex(8)}")
for u in ("annotator1", "annotator2"):
    print(f"{u.upper()}_KEY={u}.{secrets.token_hex(16)}")
PYEOF
    chmod 600 "$STATE/secrets.env"
  fi
  # shellcheck disable=SC1091
  . "$STATE/secrets.env"
  mk() {  # USER ROLE PASSWORD KEY
    "$VENV/bin/python" -m argilla_server database users create --username "$1" --role "$2" \
      --first-name "$1" --password "$3" --api-key "$4" --workspace default >>"$STATE/users.log" 2>&1 || true
  }
  # An existing user is reported in users.log and kept. The owner goes first: creating a user also
  # creates its workspace when missing, and two creating `default` at once made one of them fail
  # (UNIQUE constraint on workspaces.name), leaving that user, and its key, missing. The
  # annotators then run side by side (each is a slow import).
  mk owner owner "$OWNER_PASSWORD" "$OWNER_KEY"
  local pids=()
  mk annotator1 annotator "$ANNOTATOR1_PASSWORD" "$ANNOTATOR1_KEY" &
  pids+=($!)
  mk annotator2 annotator "$ANNOTATOR2_PASSWORD" "$ANNOTATOR2_KEY" &
  pids+=($!)
  wait "${pids[@]}"
  "$PY" - "$STATE" "$(cat "$STATE/server.url")" <<'PYEOF'
import json, sys
from pathlib import Path
state, url = Path(sys.argv[1]), sys.argv[2]
env = dict(line.split("=", 1) for line in (state / "secrets.env").read_text().split())
users = [{"username": "owner", "role": "owner", "password": env["OWNER_PASSWORD"], "api_key": env["OWNER_KEY"]}]
for u in ("annotator1", "annotator2"):
    users.append({"username": u, "role": "annotator", "password": env[f"{u.upper()}_PASSWORD"],
                  "api_key": env[f"{u.upper()}_KEY"]})
out = {"api_url": url, "api_key": env["OWNER_KEY"], "workspace": "default", "users": users}
path = state / "credentials.json"
path.write_text(json.dumps(out, indent=2))
path.chmod(0o600)
PYEOF
}

stop_one() {  # NAME
  if alive "$1"; then
    local pid
    pid="$(cat "$STATE/$1.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$STATE/$1.pid"
}

stop() {
  stop_one server
  stop_one osmem
  stop_one redis
  rm -f "$STATE/credentials.json"
}

status() {
  local rc=0
  for name in redis osmem server; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: not running"; fi
  done
  if alive server && wait_http "$(cat "$STATE/server.url")/api/v1/version" 1; then
    echo "url: $(cat "$STATE/server.url")"
    echo "credentials: $STATE/credentials.json"
  else
    rc=1
  fi
  return $rc
}

ui_deps() {
  install
  if ! command -v chromium >/dev/null 2>&1; then
    log "installing chromium (apt-get)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
  "$VENV/bin/python" -c "import playwright" 2>/dev/null || "$VENV/bin/pip" install -q --disable-pip-version-check playwright
}

case "${1:-}" in
  start) start ;;
  ui-deps) ui_deps ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status|ui-deps" >&2; exit 2 ;;
esac
