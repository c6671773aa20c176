#!/usr/bin/env bash
# Large-transfer check: a 200 MiB upload (PUT, streamed by curl -T) and a
# 200 MiB download, straight to the bench upstream, through nginx, through the
# bare baseline proxy (bench/bare, when run.sh started it) and through
# boxproxy. Reports MB/s (10^6 bytes/s), boxproxy's speed relative to direct,
# and the peak resident memory (VmHWM from /proc/<pid>/status) of boxproxy and
# of bare, which shows whether boxproxy streams bodies or holds them in memory,
# and what it holds beyond a bare httputil.ReverseProxy.
#
#   bash bench/transfer.sh
#
# Environment (all optional): SIZE_MIB=200, TRANSFER_ROUNDS=3 (median shown),
# plus the port/procs/install/BOXPROXY_BIN variables described in bench/run.sh.
# run.sh sources this file and calls transfer_bench after its own table.

# transfer_one KIND BASEURL FILE BYTES -> prints "MB/s" or "fail"
transfer_one() {
	local kind=$1 base=$2 file=$3 n=$4 out code size secs
	if [[ $kind == up ]]; then
		out=$(curl -sS "${CURL_CA[@]}" --max-time 300 -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$file" \
			-o "$BENCH_TMP/sink.json" -w '%{http_code} %{size_upload} %{time_total}' "$base/2.0/test/sink") || { echo fail; return; }
		read -r code size secs <<<"$out"
		if [[ $code != 200 ]] || ! grep -q "\"received\":$n\b" "$BENCH_TMP/sink.json"; then
			log "upload via $base: HTTP $code, upstream said: $(head -c 200 "$BENCH_TMP/sink.json")"
			echo fail
			return
		fi
	else
		out=$(curl -sS "${CURL_CA[@]}" --max-time 300 -o /dev/null -w '%{http_code} %{size_download} %{time_total}' \
			"$base/2.0/bytes?n=$n") || { echo fail; return; }
		read -r code size secs <<<"$out"
		if [[ $code != 200 || $size != "$n" ]]; then
			log "download via $base: HTTP $code, $size of $n bytes"
			echo fail
			return
		fi
	fi
	awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f\n", n / s / 1e6 }'
}

kib_field() { # PID FIELD -> value in KiB from /proc/PID/status
	awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null
}

# reset_hwm PID: VmHWM := current RSS (Linux >= 4.0, needs permission); 0 if done
reset_hwm() { { echo 5 >"/proc/$1/clear_refs"; } 2>/dev/null; }

# anon_sampler PID OUTFILE: keeps the highest RssAnon (KiB: heap, stacks,
# buffers; not the program's mapped file pages) seen in OUTFILE, every 20 ms,
# until killed or PID ends.
anon_sampler() {
	local pid=$1 out=$2 max=0 v
	echo 0 >"$out"
	while v=$(kib_field "$pid" RssAnon) && [[ -n $v ]]; do
		if ((v > max)); then
			max=$v
			echo "$max" >"$out"
		fi
		sleep 0.02
	done
}

mib() { awk -v k="$1" 'BEGIN { if (k == "") print "n/a"; else printf "%.1f", k / 1024 }'; }

transfer_bench() {
	local size_mib=${SIZE_MIB:-200} rounds=${TRANSFER_ROUNDS:-3}
	local n=$((size_mib * 1024 * 1024)) file="$BENCH_TMP/body.bin" load
	load=$(cut -d' ' -f1-3 /proc/loadavg)
	log "transfer check: ${size_mib} MiB up and down, $rounds round(s) per target"
	head -c "$n" /dev/urandom >"$file"

	local targets=(direct nginx) t kind r v
	declare -A base=([direct]="$UPSTREAM_URL" [nginx]="http://127.0.0.1:$NGINX_PORT")
	if [[ -n ${BARE_PID:-} ]]; then
		targets+=(bare)
		base[bare]="http://127.0.0.1:$BARE_PORT"
	fi
	if [[ $HAVE_BOXPROXY == 1 && -n $BOXPROXY_PID ]]; then
		targets+=(boxproxy)
		base[boxproxy]="http://127.0.0.1:$BOXPROXY_PORT"
	fi

	declare -A speed hwm bare_hwm anon bare_anon
	local idle_rss="" start_hwm="" per_phase=0 bare_idle=""
	if [[ -n $BOXPROXY_PID ]]; then
		idle_rss=$(kib_field "$BOXPROXY_PID" VmRSS)
		start_hwm=$(kib_field "$BOXPROXY_PID" VmHWM)
	fi
	[[ -n ${BARE_PID:-} ]] && bare_idle=$(kib_field "$BARE_PID" VmRSS)

	for kind in up down; do
		[[ -n $BOXPROXY_PID ]] && reset_hwm "$BOXPROXY_PID" && per_phase=1
		[[ -n ${BARE_PID:-} ]] && { reset_hwm "$BARE_PID" || per_phase=0; }
		declare -A vals=()
		local samplers=()
		if [[ -n $BOXPROXY_PID ]]; then
			anon_sampler "$BOXPROXY_PID" "$BENCH_TMP/anon-boxproxy" &
			samplers+=($!)
		fi
		if [[ -n ${BARE_PID:-} ]]; then
			anon_sampler "$BARE_PID" "$BENCH_TMP/anon-bare" &
			samplers+=($!)
		fi
		for ((r = 1; r <= rounds; r++)); do # interleaved: direct, nginx, boxproxy, direct, …
			for t in "${targets[@]}"; do
				v=$(transfer_one "$kind" "${base[$t]}" "$file" "$n")
				log "$(printf '%-4s round %d %-9s %s MB/s' "$kind" "$r" "$t" "$v")"
				[[ $v == fail ]] || vals[$t]+="$v"$'\n'
			done
		done
		for t in "${targets[@]}"; do
			v=$(printf '%s' "${vals[$t]:-}" | median | awk '{ printf "%.0f", $1 }')
			speed[$kind,$t]=${v:-fail}
		done
		unset vals
		((${#samplers[@]} > 0)) && { kill "${samplers[@]}" 2>/dev/null || true; wait "${samplers[@]}" 2>/dev/null || true; }
		[[ -n $BOXPROXY_PID ]] && hwm[$kind]=$(kib_field "$BOXPROXY_PID" VmHWM) && anon[$kind]=$(cat "$BENCH_TMP/anon-boxproxy")
		[[ -n ${BARE_PID:-} ]] && bare_hwm[$kind]=$(kib_field "$BARE_PID" VmHWM) && bare_anon[$kind]=$(cat "$BENCH_TMP/anon-bare")
	done
	rm -f "$file"

	echo "## ${size_mib} MiB transfer check (curl, one stream, 127.0.0.1)"
	echo
	echo "- $(machine_line); curl, proxies and upstream share these cores; load average at the start: $load${BENCH_AFTER_RPS:+ (raised by the req/s runs just before)}."
	echo "- upload: \`curl -T\` PUT to /2.0/test/sink (upstream reads and discards); download: GET /2.0/bytes?n=$n. MB/s = 10^6 bytes/s, median of $rounds."
	echo
	echo "| transfer | direct MB/s | nginx MB/s | bare MB/s | boxproxy MB/s | boxproxy/direct | bare peak RSS MiB | boxproxy peak RSS MiB | boxproxy/bare peak RSS | bare peak anonymous MiB | boxproxy peak anonymous MiB | boxproxy/bare anonymous |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	local label d x g b ratio rss arss
	for kind in up down; do
		[[ $kind == up ]] && label="upload ${size_mib} MiB (PUT)" || label="download ${size_mib} MiB (GET)"
		d=${speed[$kind,direct]}
		x=${speed[$kind,nginx]}
		g=${speed[$kind,bare]:-n/a}
		b=${speed[$kind,boxproxy]:-n/a}
		ratio=n/a
		[[ $b =~ ^[0-9]+$ && $d =~ ^[0-9]+$ && $d -gt 0 ]] && ratio=$(awk -v b="$b" -v d="$d" 'BEGIN { printf "%.2f", b / d }')
		rss=$(awk -v b="${hwm[$kind]:-}" -v g="${bare_hwm[$kind]:-}" 'BEGIN { if (b == "" || g == "" || g == 0) print "n/a"; else printf "%.2f", b / g }')
		arss=$(awk -v b="${anon[$kind]:-}" -v g="${bare_anon[$kind]:-}" 'BEGIN { if (b == "" || g == "" || g == 0) print "n/a"; else printf "%.2f", b / g }')
		echo "| $label | $d | $x | $g | $b | $ratio | $(mib "${bare_hwm[$kind]:-}") | $(mib "${hwm[$kind]:-}") | $rss | $(mib "${bare_anon[$kind]:-}") | $(mib "${anon[$kind]:-}") | $arss |"
	done
	echo
	if [[ -n $BOXPROXY_PID ]]; then
		local peak=${hwm[down]:-}
		[[ -n ${hwm[up]:-} && ${hwm[up]} -gt ${peak:-0} ]] && peak=${hwm[up]}
		[[ -n $start_hwm && $start_hwm -gt ${peak:-0} ]] && peak=$start_hwm
		echo "boxproxy RSS before the transfers: $(mib "$idle_rss") MiB; peak RSS (VmHWM) over the whole check: $(mib "$peak") MiB."
		[[ -n $bare_idle ]] && echo "bare RSS before the transfers: $(mib "$bare_idle") MiB; what a transfer costs is the growth from rest to peak."
		if [[ $per_phase == 1 ]]; then
			echo "The per-row peak is VmHWM after that row's transfers, reset (clear_refs) before them."
		else
			echo "VmHWM could not be reset between rows, so the download row's peak includes the uploads."
		fi
		echo "Peak RSS counts the program's own pages mapped from its file (shared with the page cache; boxproxy's binary is larger: Redis client, Prometheus, CLI); *anonymous* is what the process allocated itself (heap, stacks, buffers), sampled every 20 ms."
		echo "A proxy that buffered the body would need ≥ ${size_mib} MiB here."
		boxproxy_log_summary
	else
		echo "boxproxy was not measured (it did not build or did not start)."
	fi
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	# shellcheck source=lib.sh
	source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
	bench_init
	bench_install_tools
	bench_build
	start_upstream
	start_nginx
	start_bare
	start_boxproxy || true
	report=$(transfer_bench)
	echo
	echo "$report"
	printf '%s\n' "$report" >"$RESULTS_DIR/transfer-latest.md"
	log "written to bench/results/transfer-latest.md"
fi
