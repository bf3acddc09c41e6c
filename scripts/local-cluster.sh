#!/usr/bin/env bash
# Start (or stop) a working one-node Sheepdog cluster on 127.0.0.1:7000 and
# put sheep, collie and dog on PATH.
#   ./scripts/local-cluster.sh          install, build, start, format
#   ./scripts/local-cluster.sh stop     stop the daemon
# Environment: SHEEP_DIR (default /var/lib/sheepdog-local), SHEEP_PORT (7000),
# SHEEP_COPIES (1).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${SHEEP_DIR:-/var/lib/sheepdog-local}"
PORT="${SHEEP_PORT:-7000}"
COPIES="${SHEEP_COPIES:-1}"
PIDFILE="$DIR/sheep.pid"

if [ "${1:-}" = "stop" ]; then
  if [ -f "$PIDFILE" ]; then
    pid="$(cat "$PIDFILE")"
    kill "$pid" 2>/dev/null && echo "stopped sheep (pid $pid)" || echo "sheep was not running"
  else
    echo "no pidfile at $PIDFILE"
  fi
  exit 0
fi

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "Node.js 20 or newer is required (apt-get install nodejs npm)" >&2
  exit 1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  npm install --no-audit --no-fund
fi
npm run build --silent
# Link the workspace bins globally (symlinks to this checkout).
npm install -g --no-audit --no-fund ./sheep ./collie ./sheepfs >/dev/null

mkdir -p "$DIR"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "sheep already running (pid $(cat "$PIDFILE"))"
else
  sheep -p "$PORT" -P "$PIDFILE" "$DIR"
  echo "sheep started on 127.0.0.1:$PORT, data in $DIR"
fi

if collie cluster info -p "$PORT" | grep -q 'Waiting for cluster to be formatted'; then
  collie cluster format --copies="$COPIES" -p "$PORT"
fi
collie cluster info -p "$PORT" | head -1
echo "Try: collie vdi create Alice 1G && collie vdi list"
