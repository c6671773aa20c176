#!/usr/bin/env bash
# User-space instructions per request, boxproxy against the bare proxy,
# counted by valgrind's callgrind: a measure of cost that does not drift with
# the machine's speed or load, as CPU time on shared cores does.
#
#   bash bench/instructions.sh                 # plain upstream
#   UPSTREAM_TLS=1 bash bench/instructions.sh  # HTTPS upstream offering HTTP/2
#
# Builds the bench upstream, bench/bare and boxproxy, runs bare and boxproxy
# (developer token, log level warn) each under callgrind, warms them up, then
# per round: zeroes a proxy's counters, sends wrk's load for SECONDS, dumps the
# counters and divides the instructions by the requests wrk completed; bare
# and boxproxy alternate. Prints the medians and boxproxy/bare, and writes
# them to bench/results/instructions.md, and the last round's counts per
# function to bench/results/callgrind-{bare,boxproxy}.out.
#
# What it counts: every instruction the proxy process executes in user space
# (its handlers, net/http, TLS, the garbage collector, the scheduler), not the
# kernel's work on its sockets, which is the same for both proxies. Go's
# asynchronous preemption is switched off in both (GODEBUG=asyncpreemptoff=1),
# as callgrind cannot follow its signals.
#
# Environment (all optional): ROUNDS=3, SECONDS_PER_ROUND=5, CONNS=4,
# UPSTREAM_TLS=0, BOXPROXY_BIN=, BENCH_NO_INSTALL=1 (never call apt-get).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_ROUND:-5}
CONNS=${CONNS:-4}

# install_tools: valgrind, wrk and curl from the distribution's packages when
# they are missing (nginx, which run.sh also uses, is not needed here).
install_tools() {
	local need=()
	command -v callgrind_control >/dev/null || need+=(valgrind)
	command -v wrk >/dev/null || need+=(wrk)
	command -v curl >/dev/null || need+=(curl)
	[[ ${#need[@]} -eq 0 ]] || bench_apt_install "${need[@]}"
}

# under_callgrind NAME PORT CMD... : starts CMD under callgrind (dumps to
# $BENCH_TMP/cg-NAME.out.N) with CG_ENV's variables, sets CG_PID and waits
# until it answers.
under_callgrind() {
	local name=$1 port=$2
	shift 2
	# The environment goes before valgrind: a command that execs (env) would
	# run uninstrumented.
	env "${CG_ENV[@]}" GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --dump-instr=no \
		--callgrind-out-file="$BENCH_TMP/cg-$name.out" "$@" >"$BENCH_TMP/vg-$name.log" 2>&1 &
	local pid=$!
	BENCH_PIDS+=("$pid")
	local i
	for ((i = 0; i < 300; i++)); do
		curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/2.0/users/me" && { CG_PID=$pid; return 0; }
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	tail -n 20 "$BENCH_TMP/vg-$name.log" >&2
	die "$name did not answer under callgrind"
}

# measure NAME PID PORT -> instructions per request of one round
measure() {
	local name=$1 pid=$2 port=$3 t=2 out reqs f
	((t > CONNS)) && t=$CONNS
	callgrind_control -z "$pid" >/dev/null
	out=$(wrk -t"$t" -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$port/2.0/users/me")
	callgrind_control -d "$pid" >/dev/null
	reqs=$(awk '/ requests in /{ print $1 }' <<<"$out")
	if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
		log "$name: wrk saw errors: $(grep "Non-2xx\|Socket errors" <<<"$out" | tr '\n' ' ')"
	fi
	[[ -n $reqs && $reqs -gt 0 ]] || die "$name: wrk completed no request"
	sleep 0.5
	f=$(find "$BENCH_TMP" -name "cg-$name.out.*" -printf '%T@ %p\n' | sort -rn | head -n1 | cut -d' ' -f2)
	[[ -n $f ]] || die "$name: callgrind wrote no dump"
	awk -v n="$reqs" '/^summary:/ { printf "%.0f\n", $2 / n; exit }' "$f"
}

CG_PID=""
CG_ENV=()

main() {
	bench_init
	install_tools
	bench_build
	[[ $HAVE_BOXPROXY == 1 ]] || die "boxproxy does not build"
	start_upstream
	local env=() bare_port bp_port bare_pid bp_pid
	[[ -n $UPSTREAM_CA ]] && env=(SSL_CERT_FILE="$UPSTREAM_CA")
	bare_port=$(free_port "")
	bp_port=$(free_port "")
	log "starting bare and boxproxy under callgrind (slow: about 50× the instructions' time)"
	CG_ENV=("${env[@]}")
	under_callgrind bare "$bare_port" "$BIN_DIR/bare" -addr "127.0.0.1:$bare_port" -upstream "$UPSTREAM_URL" -token "$BENCH_TOKEN"
	bare_pid=$CG_PID
	CG_ENV=("${env[@]}" BOXPROXY_DEVELOPER_TOKEN="$BENCH_TOKEN" BOXPROXY_API_URL="$UPSTREAM_URL" BOXPROXY_UPLOAD_URL="$UPSTREAM_URL"
		BOXPROXY_LISTEN="127.0.0.1:$bp_port" BOXPROXY_LOG_LEVEL=warn)
	under_callgrind boxproxy "$bp_port" "$BOXPROXY_EXE"
	bp_pid=$CG_PID
	wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$bare_port/2.0/users/me" >/dev/null
	wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$bp_port/2.0/users/me" >/dev/null

	local r b x bs="" xs=""
	for ((r = 1; r <= ROUNDS; r++)); do
		b=$(measure bare "$bare_pid" "$bare_port")
		x=$(measure boxproxy "$bp_pid" "$bp_port")
		log "round $r: bare $b, boxproxy $x instructions per request"
		bs+="$b"$'\n'
		xs+="$x"$'\n'
	done
	b=$(printf '%s' "$bs" | median)
	x=$(printf '%s' "$xs" | median)
	# The last round's counts, per function: callgrind_annotate FILE shows
	# where each proxy's instructions go.
	local n
	for n in bare boxproxy; do
		find "$BENCH_TMP" -name "cg-$n.out.*" -printf '%T@ %p\n' | sort -rn | head -n1 | cut -d' ' -f2 |
			xargs -r -I{} cp {} "$RESULTS_DIR/callgrind-$n.out"
	done
	local report="$RESULTS_DIR/instructions.md"
	{
		echo "## User-space instructions per request (callgrind), GET /2.0/users/me"
		echo
		echo "- $(machine_line); upstream $([[ $UPSTREAM_TLS == 1 ]] && echo "HTTPS with HTTP/2 offered" || echo "plain HTTP"); wrk ${CONNS} connections, ${SECS}s per round, ${ROUNDS} alternating rounds, median."
		echo
		echo "| bare | boxproxy | boxproxy/bare |"
		echo "|---:|---:|---:|"
		awk -v b="$b" -v x="$x" 'BEGIN { printf "| %.0f | %.0f | %.3f |\n", b, x, x / b }'
		echo
		echo "All rounds (bare, boxproxy): $(paste -d, <(printf '%s' "$bs") <(printf '%s' "$xs") | tr '\n' ' ')"
		echo
		echo "Per function, last round: \`callgrind_annotate bench/results/callgrind-boxproxy.out\` (and -bare.out)."
	} >"$report"
	echo
	cat "$report"
	log "written to ${report#"$REPO_DIR"/}"
}

main "$@"
