#!/usr/bin/env bash
# Start-up to ready: starts `boxproxy demo` (the proxy plus a local Box stand-in
# with a reachable token endpoint) and times how long until /readyz answers 200,
# i.e. until a token for the default subject is held. Prints one line per run.
#
#   bash bench/startup.sh            # RUNS=5 PORT=18181
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-5}
PORT=${PORT:-18181}
mkdir -p bench/.bin
go build -o bench/.bin/boxproxy .
for i in $(seq "$RUNS"); do
	start=$(date +%s%N)
	BOXPROXY_LISTEN=127.0.0.1:$PORT bench/.bin/boxproxy demo >/dev/null 2>&1 &
	pid=$!
	deadline=$((start + 5000000000))
	until curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz"; do
		[ "$(date +%s%N)" -lt "$deadline" ] || { echo "not ready within 5 s"; kill "$pid"; exit 1; }
		sleep 0.002
	done
	end=$(date +%s%N)
	echo "run $i: ready after $(((end - start) / 1000000)) ms (includes starting the stand-in and curl's own start-ups)"
	kill "$pid"
	wait "$pid" 2>/dev/null || true
done
