#!/usr/bin/env bash
# One-command benchmark: boxproxy vs a bare Go reverse proxy vs nginx vs no
# proxy at all.
#
#   bash bench/run.sh
#
# Installs nginx + wrk (apt-get) when missing, builds boxproxy, a tiny local
# upstream (bench/upstream) and the baseline "bare" (bench/bare: one
# httputil.ReverseProxy that only sets a fixed token, on boxproxy's Transport),
# starts everything on 127.0.0.1, runs wrk against the upstream directly,
# through nginx, through bare and through boxproxy, interleaved, and prints a
# markdown table (also written to bench/results/latest.md). boxproxy/bare is
# the cost of boxproxy's own work on top of net/http. Then runs the 200 MiB
# upload/download check of bench/transfer.sh (TRANSFER=0 skips it).
#
# Environment (all optional):
#   DURATION=5          seconds per wrk run
#   ROUNDS=3            rounds per connection count; the median is reported
#   CONNS="1 16 64"     connection counts
#   WRK_THREADS=2       wrk threads (capped at the connection count)
#   WARMUP=1            seconds of warm-up per target before measuring (0: none)
#   NGINX_WORKERS=1     nginx worker_processes
#   BOXPROXY_PROCS=     GOMAXPROCS for boxproxy and bare (default: Go's default, all cores)
#   UPSTREAM_PROCS=     GOMAXPROCS for the upstream (default: all cores)
#   UPSTREAM_PORT= NGINX_PORT= BARE_PORT= BOXPROXY_PORT=   fixed ports (default: free ones)
#   TRANSFER=1          also run the 200 MiB transfer check (see transfer.sh)
#   UPSTREAM_TLS=1      the upstream speaks HTTPS with HTTP/2 offered, as Box does
#                       (nginx: proxy_pass https with verification; boxproxy, bare: SSL_CERT_FILE)
#   BOXPROXY_BIN=       measure this boxproxy binary instead of building one
#   GOGC=               Go's own variable, for every Go process here: GOGC=100 compares
#                       boxproxy and bare at the same collector pacing (unset, boxproxy
#                       paces its collector at 150 and the others at Go's default 100)
#   BENCH_NO_INSTALL=1  never call apt-get
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=transfer.sh
source "$BENCH_DIR/transfer.sh"

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-"1 16 64"}
WRK_THREADS=${WRK_THREADS:-2}
WARMUP=${WARMUP:-1}
REQ_PATH=/2.0/users/me

# cpu_ticks PID... -> user+system CPU time of these processes, in clock ticks
cpu_ticks() {
	local p sum=0 u s
	for p in "$@"; do
		read -r u s < <(awk '{ print $14, $15 }' "/proc/$p/stat" 2>/dev/null || echo "0 0")
		sum=$((sum + u + s))
	done
	echo "$sum"
}

# run_wrk NAME PORT CONNS SECONDS OUTFILE [PID...] -> prints "req/s p99_ms errors cpu_us_per_req"
# The CPU time the PIDs used during the run, divided by the requests wrk
# completed, is the target's CPU cost per request ("-" without PIDs).
run_wrk() {
	local name=$1 port=$2 c=$3 d=$4 out=$5 t=$WRK_THREADS
	shift 5
	((t > c)) && t=$c
	local before after
	before=$(cpu_ticks "$@")
	timeout -k 5 $((d + 30)) wrk -t"$t" -c"$c" -d"${d}s" --latency \
		"${scheme[$name]:-http}://127.0.0.1:$port$REQ_PATH" >"$out" 2>&1 || true
	after=$(cpu_ticks "$@")
	awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" -v havepids=$# '
		function ms(v) {
			if (v ~ /us$/) return substr(v, 1, length(v)-2) / 1000
			if (v ~ /ms$/) return substr(v, 1, length(v)-2) + 0
			if (v ~ /m$/)  return substr(v, 1, length(v)-1) * 60000
			if (v ~ /s$/)  return substr(v, 1, length(v)-1) * 1000
			return v + 0
		}
		/^ *99%/                 { p99 = ms($2) }
		/^Requests\/sec:/        { rps = $2 }
		/Non-2xx or 3xx/         { err += $NF }
		/Socket errors:/         { gsub(",", ""); err += $4 + $6 + $8 + $10 }
		/ requests in /          { reqs = $1 }
		END {
			if (rps == "") { print "- - - -"; exit }
			cpu = (havepids > 0 && reqs > 0) ? sprintf("%.1f", ticks * 1e6 / hz / reqs) : "-"
			printf "%.0f %.3f %d %s\n", rps, p99, err, cpu
		}' "$out"
}

main() {
	LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
	if awk -v n="$(nproc)" '{ exit !($1 > n / 2) }' /proc/loadavg; then
		log "note: load average is $LOAD_AT_START on $(nproc) cores; other work will make the numbers noisy"
	fi
	bench_init
	bench_install_tools
	bench_build

	start_upstream
	start_nginx
	check_target nginx "http://127.0.0.1:$NGINX_PORT" "Bearer $BENCH_TOKEN" || die "nginx does not proxy as expected"
	start_bare
	check_target bare "http://127.0.0.1:$BARE_PORT" "Bearer $BENCH_TOKEN" || die "bench/bare does not proxy as expected"
	if start_boxproxy; then
		if ! check_target boxproxy "http://127.0.0.1:$BOXPROXY_PORT" "Bearer $BENCH_TOKEN"; then
			log "boxproxy does not proxy /2.0/users/me as expected; skipping its column"
			stop_boxproxy
			HAVE_BOXPROXY=0
		fi
	fi

	local targets=(direct nginx bare) raw="$RESULTS_DIR/raw" csv="$RESULTS_DIR/latest.csv"
	[[ $HAVE_BOXPROXY == 1 ]] && targets+=(boxproxy)
	declare -A port=([direct]=$UPSTREAM_PORT [nginx]=$NGINX_PORT [bare]=$BARE_PORT [boxproxy]=${BOXPROXY_PORT:-})
	declare -gA scheme=([direct]=$UPSTREAM_SCHEME)
	rm -rf "$raw" && mkdir -p "$raw"
	echo "conns,round,target,req_per_s,p99_ms,errors,cpu_us_per_req" >"$csv"
	# Whose CPU time counts: nginx's master and workers; the others are one process.
	declare -A pids=([direct]=$UPSTREAM_PID [nginx]="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')" [bare]=$BARE_PID [boxproxy]=${BOXPROXY_PID:-})

	if ((WARMUP > 0)); then
		log "warm-up: ${WARMUP}s per target"
		for t in "${targets[@]}"; do run_wrk "$t" "${port[$t]}" 16 "$WARMUP" "$raw/warmup-$t.txt" >/dev/null; done
	fi

	local est=$(( $(wc -w <<<"$CONNS") * ROUNDS * ${#targets[@]} * DURATION ))
	log "measuring: conns {$CONNS} x $ROUNDS rounds x {${targets[*]}} x ${DURATION}s ≈ ${est}s"
	local c r t res
	for c in $CONNS; do
		for ((r = 1; r <= ROUNDS; r++)); do
			for t in "${targets[@]}"; do
				# shellcheck disable=SC2086 # pids[$t] is a list
				res=$(run_wrk "$t" "${port[$t]}" "$c" "$DURATION" "$raw/c$c-r$r-$t.txt" ${pids[$t]})
				read -r rps p99 err cpu <<<"$res"
				echo "$c,$r,$t,$rps,$p99,$err,$cpu" >>"$csv"
				log "$(printf 'c=%-3s round %d %-9s %8s req/s  p99 %8s ms  CPU %6s µs/req%s' "$c" "$r" "$t" "$rps" "$p99" "$cpu" \
					"$([[ $err != 0 && $err != - ]] && echo "  ($err errors/non-2xx)")")"
			done
		done
	done

	local report="$RESULTS_DIR/latest.md"
	{
		echo "## boxproxy benchmark: GET $REQ_PATH, ~100-byte JSON answer"
		echo
		echo "- $(machine_line)"
		echo "- load average when the run started: $LOAD_AT_START (1, 5, 15 min); well above 0 means other work competed for the cores too."
		echo "- wrk, the proxies and the upstream all run on this machine and share these $(nproc) cores, so absolute numbers understate what a dedicated host does; compare columns, not machines."
		echo "- wrk ${DURATION}s per run, threads min(${WRK_THREADS}, connections), ${ROUNDS} interleaved round(s) (direct, nginx, bare, boxproxy), median shown."
		echo "- nginx $("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///'): ${NGINX_WORKERS:-1} worker, upstream keepalive 64, HTTP/1.1, injects Authorization. bare (bench/bare): one httputil.ReverseProxy that only sets a fixed Authorization, on boxproxy's http.Transport (proxy.NewTransport), pooled copy buffers, same GOMAXPROCS; boxproxy/bare is the cost of boxproxy's own work when both run at the same pacing (GOGC=100 bash bench/run.sh). boxproxy: token method, GOMAXPROCS=${BOXPROXY_PROCS:-default ($(nproc))}, log level warn. Collector pacing: $([[ -n ${GOGC:-} ]] && echo "GOGC=$GOGC for every Go process here" || echo "Go's default (GOGC=100) for bare and the upstream, boxproxy's own (150) for boxproxy"). Upstream: bench/upstream (Go), $([[ $UPSTREAM_TLS == 1 ]] && echo "HTTPS with HTTP/2 offered (nginx uses HTTP/1.1 over TLS with kept-alive connections, bare and boxproxy HTTP/2; wrk's direct runs use TLS too)" || echo "plain HTTP"), GOMAXPROCS=${UPSTREAM_PROCS:-default ($(nproc))}."
		if [[ $HAVE_BOXPROXY == 1 ]]; then
			local ver
			ver=$(BOXPROXY_LISTEN=127.0.0.1:0 timeout -k 1 5 "$BOXPROXY_EXE" version 2>/dev/null | head -n1 || true)
			echo "- boxproxy version: ${ver:-unknown}"
		fi
		[[ $HAVE_BOXPROXY == 1 ]] || echo "- **boxproxy was not measured**: it did not build or did not start (see the messages above)."
		echo
		echo "| connections | direct req/s | nginx req/s | bare req/s | boxproxy req/s | boxproxy/nginx | boxproxy/bare req/s | p99 direct ms | p99 nginx ms | p99 bare ms | p99 boxproxy ms | boxproxy p99 added over direct ms | CPU µs/req upstream (direct) | CPU µs/req nginx | CPU µs/req bare | CPU µs/req boxproxy | boxproxy/bare CPU µs/req |"
		echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		for c in $CONNS; do
			awk -F, -v c="$c" -v rounds="$ROUNDS" '
				function med(t, f,    n, i, j, k, v, a) {
					n = 0
					for (i = 1; i <= rounds; i++) if ((t, i) in val) {
						split(val[t, i], v, " "); if (v[f] == "-") continue
						a[++n] = v[f] + 0
					}
					if (n == 0) return ""
					for (i = 2; i <= n; i++) { k = a[i]; for (j = i - 1; j > 0 && a[j] > k; j--) a[j+1] = a[j]; a[j+1] = k }
					return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
				}
				# The median over rounds of boxproxy/bare within each round
				# (the two run one after the other, so that both see the
				# same load), with the lowest and highest.
				function medratio(f,    n, i, j, k, a, x, y) {
					n = 0
					for (i = 1; i <= rounds; i++) if (("bare", i) in val && ("boxproxy", i) in val) {
						split(val["bare", i], x, " "); split(val["boxproxy", i], y, " ")
						if (x[f] == "-" || y[f] == "-" || x[f] + 0 <= 0) continue
						a[++n] = (y[f] + 0) / (x[f] + 0)
					}
					if (n == 0) return "n/a"
					for (i = 2; i <= n; i++) { k = a[i]; for (j = i - 1; j > 0 && a[j] > k; j--) a[j+1] = a[j]; a[j+1] = k }
					return sprintf("%.2f (%.2f–%.2f)", (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2, a[1], a[n])
				}
				NR > 1 && $1 == c { val[$3, $2] = $4 " " $5 " " $7; if ($6 != 0 && $6 != "-") bad[$3] = 1 }
				function cell(x, fmt, t) { return x == "" ? "n/a" : sprintf(fmt, x) (bad[t] ? " (!)" : "") }
				END {
					dr = med("direct", 1); nr = med("nginx", 1); gr = med("bare", 1); br = med("boxproxy", 1)
					dp = med("direct", 2); np = med("nginx", 2); gp = med("bare", 2); bp = med("boxproxy", 2)
					dc = med("direct", 3); nc = med("nginx", 3); gc = med("bare", 3); bc = med("boxproxy", 3)
					ratio = (br != "" && nr > 0) ? sprintf("%.2f", br / nr) : "n/a"
					bare_r = medratio(1)
					bare_c = medratio(3)
					added = (bp != "" && dp != "") ? sprintf("%+.2f", bp - dp) : "n/a"
					printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c,
						cell(dr, "%.0f", "direct"), cell(nr, "%.0f", "nginx"), cell(gr, "%.0f", "bare"), cell(br, "%.0f", "boxproxy"), ratio, bare_r,
						cell(dp, "%.2f", "direct"), cell(np, "%.2f", "nginx"), cell(gp, "%.2f", "bare"), cell(bp, "%.2f", "boxproxy"), added,
						cell(dc, "%.1f", "direct"), cell(nc, "%.1f", "nginx"), cell(gc, "%.1f", "bare"), cell(bc, "%.1f", "boxproxy"), bare_c
				}' "$csv"
		done
		echo
		if awk -F, 'NR > 1 && $6 != 0 { bad = 1 } END { exit !bad }' "$csv"; then
			echo "(!) = some requests failed or were not 2xx in at least one run; see bench/results/raw/."
		fi
		echo "CPU µs/req: user + system CPU time the process used during the run (from /proc), divided by the requests wrk completed; for nginx, master and workers. boxproxy/bare: the median over rounds of the ratio within each round (bare and boxproxy run one after the other), lowest–highest in brackets. CPU µs/req measures cost, not speed, and is steadier than req/s when the cores are shared."
		echo "All rounds: bench/results/latest.csv; raw wrk output: bench/results/raw/."
	} >"$report"
	[[ $HAVE_BOXPROXY == 1 ]] && boxproxy_log_summary

	if [[ ${TRANSFER:-1} == 1 ]]; then
		# Fresh processes, so that peak RSS is the transfers', not the req/s runs'.
		stop_bare
		start_bare
		[[ $HAVE_BOXPROXY == 1 ]] && { stop_boxproxy; start_boxproxy || true; }
		echo >>"$report"
		BENCH_AFTER_RPS=1 transfer_bench >>"$report"
	fi

	echo
	cat "$report"
	echo
	log "written to ${report#"$REPO_DIR"/}"
}

main "$@"
