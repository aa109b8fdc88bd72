#!/usr/bin/env bash
# Runs a command against a fresh `zapgate serve --engine sim` and stops the server afterwards,
# whatever happens. The command gets ZAPGATE_SERVER (gRPC host:port), ZAPGATE_HTTP_SERVER (the
# HTTP port's http://host:port: Connect, gRPC-Web) and ZAPGATE_API_KEY (the initial key).
#
#   bash clients/with-sim-server.sh npm --prefix clients/typescript test
#
# PYTHON is the interpreter that has zapgate installed (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
server= command=
stop() {
  if [ -n "$command" ]; then kill -TERM "$command" 2>/dev/null || true; fi
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"
    for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

"$python" -m zapgate.gateway.cli serve --engine sim --engine-workers 1 --grace 2 \
  --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir "$work/data" --runtime-dir "$work/runtime" \
  --sim-delivered-seconds 0.5 --sim-read-seconds 1.5 2>"$work/server.log" &
server=$!
for _ in $(seq 300); do
  port=$(sed -n 's/.*zapgate listening on [0-9.]*:\([0-9]*\).*/\1/p' "$work/server.log" | head -1)
  http=$(sed -n 's/.*HTTP (Connect, gRPC-Web) on \(http:[0-9.:/]*\).*/\1/p' "$work/server.log" | head -1)
  [ -n "$port" ] && [ -n "$http" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "zapgate did not start:" >&2; cat "$work/server.log" >&2; exit 1; }

export ZAPGATE_SERVER="127.0.0.1:$port"
export ZAPGATE_HTTP_SERVER="$http"
ZAPGATE_API_KEY=$(cat "$work/data/initial-api-key")
export ZAPGATE_API_KEY
"$@" &  # in the background, so that a signal stops the server at once
command=$!
status=0
wait "$command" || status=$?
command=
if [ "$status" != 0 ]; then
  echo "--- zapgate log (last 80 lines)" >&2
  tail -n 80 "$work/server.log" >&2
fi
exit "$status"
