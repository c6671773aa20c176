# shellcheck shell=bash
# Shared helpers for bench/run.sh and bench/transfer.sh. Source it; do not run it.
#
# Everything listens on 127.0.0.1 only. Every process started here is recorded
# and stopped by bench_cleanup (installed as an EXIT trap by bench_init).

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
BIN_DIR="$BENCH_DIR/.bin"
RESULTS_DIR="$BENCH_DIR/results"
BENCH_TOKEN=benchtoken

# UPSTREAM_TLS=1: the upstream speaks HTTPS (HTTP/2 offered), as Box does;
# curl, nginx and boxproxy trust its self-signed certificate ($UPSTREAM_CA).
UPSTREAM_TLS=${UPSTREAM_TLS:-0}
UPSTREAM_SCHEME=http
[[ $UPSTREAM_TLS == 1 ]] && UPSTREAM_SCHEME=https
UPSTREAM_CA=""
CURL_CA=() # curl's --cacert for the upstream's certificate, when it has one

BENCH_PIDS=()
BENCH_TMP=""
HAVE_BOXPROXY=0
BOXPROXY_PID=""
BARE_PID=""
NGINX_PID=""
UPSTREAM_PID=""

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup ---

bench_stop_pid() { # pid: TERM, wait up to 5 s, then KILL
	local pid=$1
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	for pid in "${BENCH_PIDS[@]}"; do
		bench_stop_pid "$pid"
	done
	if [[ -n $BENCH_TMP && -d $BENCH_TMP && ${BENCH_KEEP_TMP:-0} != 1 ]]; then
		rm -rf "$BENCH_TMP"
	fi
	exit "$rc"
}

bench_init() {
	BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/boxproxy-bench.XXXXXX")
	trap bench_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	mkdir -p "$BIN_DIR" "$RESULTS_DIR"
}

# ------------------------------------------------------------------ tools ---

as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

find_nginx() {
	NGINX_BIN=$(command -v nginx || true)
	[[ -z $NGINX_BIN && -x /usr/sbin/nginx ]] && NGINX_BIN=/usr/sbin/nginx
	[[ -n $NGINX_BIN ]]
}

# bench_apt_install PKG...: installs Debian packages (root or sudo), or fails
# saying what is missing when it may not (BENCH_NO_INSTALL=1, no apt-get).
bench_apt_install() {
	[[ ${BENCH_NO_INSTALL:-0} == 1 ]] && die "missing: $* (BENCH_NO_INSTALL=1)"
	command -v apt-get >/dev/null || die "missing: $*; install them and rerun"
	log "installing $* with apt-get"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Installs nginx (nginx-light, else nginx) and wrk from the distribution's
# packages when they are missing. Set BENCH_NO_INSTALL=1 to forbid this.
bench_install_tools() {
	local need=()
	find_nginx || need+=(nginx)
	command -v wrk >/dev/null || need+=(wrk)
	command -v curl >/dev/null || need+=(curl)
	[[ ${#need[@]} -eq 0 ]] && return 0
	local pkgs=() p
	for p in "${need[@]}"; do
		case $p in
		nginx) pkgs+=(nginx-light) ;;
		*) pkgs+=("$p") ;;
		esac
	done
	if ! (bench_apt_install "${pkgs[@]}"); then
		bench_apt_install "${pkgs[@]/nginx-light/nginx}"
	fi
	find_nginx || die "nginx still missing after install"
	command -v wrk >/dev/null || die "wrk still missing after install"
}

# ------------------------------------------------------------------ build ---

bench_build() {
	command -v go >/dev/null || die "go is not on PATH"
	log "building bench upstream"
	(cd "$REPO_DIR" && go build -o "$BIN_DIR/upstream" ./bench/upstream) || die "cannot build bench/upstream"
	log "building the bare baseline proxy (bench/bare)"
	(cd "$REPO_DIR" && go build -o "$BIN_DIR/bare" ./bench/bare) || die "cannot build bench/bare"
	BOXPROXY_EXE="$BIN_DIR/boxproxy"
	if [[ -n ${BOXPROXY_BIN:-} ]]; then # measure a binary built elsewhere
		[[ -x $BOXPROXY_BIN ]] || die "BOXPROXY_BIN=$BOXPROXY_BIN is not an executable"
		BOXPROXY_EXE=$BOXPROXY_BIN
		HAVE_BOXPROXY=1
		log "using boxproxy binary $BOXPROXY_EXE (BOXPROXY_BIN)"
		return
	fi
	log "building boxproxy (go build -o bench/.bin/boxproxy .)"
	rm -f "$BIN_DIR/boxproxy"
	if (cd "$REPO_DIR" && go build -o "$BIN_DIR/boxproxy" . ) >"$BENCH_TMP/build.log" 2>&1; then
		HAVE_BOXPROXY=1
	else
		HAVE_BOXPROXY=0
		log "boxproxy does not build yet; the boxproxy column is skipped. First lines of the error:"
		head -n 15 "$BENCH_TMP/build.log" | sed 's/^/[bench]   /' >&2
	fi
}

# ------------------------------------------------------------------ ports ---

port_is_free() {
	! ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}

# free_port [preferred]: the preferred port when given and free, else one the
# kernel hands out (python3), else the first free one from 20000 up (ss).
free_port() {
	local want=${1:-} p
	if [[ -n $want ]]; then
		port_is_free "$want" || die "port $want is in use"
		echo "$want"
		return
	fi
	if command -v python3 >/dev/null &&
		p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null) &&
		[[ -n $p ]]; then
		echo "$p"
		return
	fi
	for ((p = 20000 + RANDOM % 20000; p < 65000; p++)); do
		port_is_free "$p" && { echo "$p"; return; }
	done
	die "no free port"
}

# wait_http URL SECONDS [PID]: until curl -sf URL answers (fails early when PID exits).
wait_http() {
	local url=$1 deadline=$((SECONDS + ${2:-10})) pid=${3:-}
	while ((SECONDS < deadline)); do
		curl -sf "${CURL_CA[@]}" -o /dev/null --max-time 1 "$url" && return 0
		[[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null && return 1
		sleep 0.1
	done
	return 1
}

# -------------------------------------------------------------- processes ---

start_upstream() {
	UPSTREAM_PORT=$(free_port "${UPSTREAM_PORT:-}")
	local procs=()
	[[ -n ${UPSTREAM_PROCS:-} ]] && procs=(-procs "$UPSTREAM_PROCS")
	local tls=()
	if [[ $UPSTREAM_TLS == 1 ]]; then
		tls=(-tls "$BENCH_TMP/tls")
		UPSTREAM_CA="$BENCH_TMP/tls/cert.pem"
		CURL_CA=(--cacert "$UPSTREAM_CA")
	fi
	"$BIN_DIR/upstream" -addr "127.0.0.1:$UPSTREAM_PORT" "${procs[@]}" "${tls[@]}" >"$BENCH_TMP/upstream.log" 2>&1 &
	UPSTREAM_PID=$!
	BENCH_PIDS+=("$UPSTREAM_PID")
	UPSTREAM_URL="$UPSTREAM_SCHEME://127.0.0.1:$UPSTREAM_PORT"
	wait_http "$UPSTREAM_URL/2.0/users/me" 10 "$UPSTREAM_PID" ||
		{ cat "$BENCH_TMP/upstream.log" >&2; die "upstream did not start"; }
	log "upstream  on $UPSTREAM_URL (pid $UPSTREAM_PID)"
}

start_nginx() {
	NGINX_PORT=$(free_port "${NGINX_PORT:-}")
	local d="$BENCH_TMP/nginx"
	mkdir -p "$d/tmp"
	cat >"$d/nginx.conf" <<EOF
# generated by bench/lib.sh
user root;
worker_processes ${NGINX_WORKERS:-1};
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path       $d/tmp/proxy;
    fastcgi_temp_path     $d/tmp/fastcgi;
    uwsgi_temp_path       $d/tmp/uwsgi;
    scgi_temp_path        $d/tmp/scgi;
    keepalive_requests 1000000;

    upstream bench_upstream {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass $UPSTREAM_SCHEME://bench_upstream;
            $( [[ $UPSTREAM_TLS == 1 ]] && echo "proxy_ssl_trusted_certificate $UPSTREAM_CA; proxy_ssl_verify on; proxy_ssl_name localhost; proxy_ssl_session_reuse on;")
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer $BENCH_TOKEN";
            # Stream bodies both ways, like a Go reverse proxy does, instead
            # of spooling 200 MiB transfers to temp files.
            client_max_body_size 0;
            proxy_request_buffering off;
            proxy_buffering off;
            client_body_buffer_size 256k;
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
        }
    }
}
EOF
	"$NGINX_BIN" -p "$d" -e "$d/error.log" -c "$d/nginx.conf" >"$d/stdout.log" 2>&1 &
	NGINX_PID=$!
	BENCH_PIDS+=("$NGINX_PID")
	wait_http "http://127.0.0.1:$NGINX_PORT/2.0/users/me" 10 "$NGINX_PID" ||
		{ cat "$d/stdout.log" "$d/error.log" >&2 2>/dev/null; die "nginx did not start"; }
	log "nginx     on 127.0.0.1:$NGINX_PORT (pid $NGINX_PID, ${NGINX_WORKERS:-1} worker)"
}

# start_boxproxy: returns non-zero (and clears HAVE_BOXPROXY) when it does not
# come up, so the caller can go on with direct + nginx.
start_boxproxy() {
	[[ $HAVE_BOXPROXY == 1 ]] || return 1
	BOXPROXY_PORT=$(free_port "${BOXPROXY_PORT:-}")
	local procs=()
	[[ -n ${BOXPROXY_PROCS:-} ]] && procs=(GOMAXPROCS="$BOXPROXY_PROCS")
	[[ -n $UPSTREAM_CA ]] && procs+=(SSL_CERT_FILE="$UPSTREAM_CA") # Go's system roots: just this one
	env "${procs[@]}" \
		BOXPROXY_DEVELOPER_TOKEN="$BENCH_TOKEN" \
		BOXPROXY_API_URL="$UPSTREAM_URL" \
		BOXPROXY_UPLOAD_URL="$UPSTREAM_URL" \
		BOXPROXY_LISTEN="127.0.0.1:$BOXPROXY_PORT" \
		BOXPROXY_LOG_LEVEL="${BOXPROXY_LOG_LEVEL:-warn}" \
		"$BOXPROXY_EXE" >"$BENCH_TMP/boxproxy.log" 2>&1 &
	BOXPROXY_PID=$!
	BENCH_PIDS+=("$BOXPROXY_PID")
	if ! wait_http "http://127.0.0.1:$BOXPROXY_PORT/healthz" 15 "$BOXPROXY_PID"; then
		log "boxproxy did not answer /healthz within 15 s (or exited); skipping it. Its output:"
		tail -n 20 "$BENCH_TMP/boxproxy.log" | sed 's/^/[bench]   /' >&2
		bench_stop_pid "$BOXPROXY_PID"
		BOXPROXY_PID=""
		HAVE_BOXPROXY=0
		return 1
	fi
	log "boxproxy  on 127.0.0.1:$BOXPROXY_PORT (pid $BOXPROXY_PID${BOXPROXY_PROCS:+, GOMAXPROCS=$BOXPROXY_PROCS})"
}

# start_bare: the baseline, a bare httputil.ReverseProxy that only sets the
# token (bench/bare), with boxproxy's Transport, GOMAXPROCS and trust.
start_bare() {
	BARE_PORT=$(free_port "${BARE_PORT:-}")
	local procs=()
	[[ -n ${BOXPROXY_PROCS:-} ]] && procs=(GOMAXPROCS="$BOXPROXY_PROCS")
	[[ -n $UPSTREAM_CA ]] && procs+=(SSL_CERT_FILE="$UPSTREAM_CA")
	env "${procs[@]}" "$BIN_DIR/bare" -addr "127.0.0.1:$BARE_PORT" -upstream "$UPSTREAM_URL" -token "$BENCH_TOKEN" \
		>"$BENCH_TMP/bare.log" 2>&1 &
	BARE_PID=$!
	BENCH_PIDS+=("$BARE_PID")
	wait_http "http://127.0.0.1:$BARE_PORT/2.0/users/me" 10 "$BARE_PID" ||
		{ cat "$BENCH_TMP/bare.log" >&2; die "the bare proxy did not start"; }
	log "bare      on 127.0.0.1:$BARE_PORT (pid $BARE_PID${BOXPROXY_PROCS:+, GOMAXPROCS=$BOXPROXY_PROCS})"
}

stop_bare() {
	[[ -n $BARE_PID ]] && bench_stop_pid "$BARE_PID"
	BARE_PID=""
}

# boxproxy_log_summary: boxproxy runs with BOXPROXY_LOG_LEVEL=warn, so any line
# it wrote during the benchmark deserves a look.
boxproxy_log_summary() {
	local f="$BENCH_TMP/boxproxy.log" n
	[[ -f $f ]] || return 0
	n=$(grep -c . "$f" || true)
	[[ $n == 0 ]] && return 0
	log "boxproxy wrote $n log line(s) at level warn or above; the first ones:"
	head -n 5 "$f" | cut -c1-300 | sed 's/^/[bench]   /' >&2
}

stop_boxproxy() {
	[[ -n $BOXPROXY_PID ]] && bench_stop_pid "$BOXPROXY_PID"
	BOXPROXY_PID=""
}

# check_target NAME BASEURL [EXPECT_AUTH]: one request must return the
# upstream's body; when EXPECT_AUTH is set, the upstream must have seen it.
check_target() {
	local name=$1 base=$2 auth=${3:-} got
	got=$(curl -sS "${CURL_CA[@]}" --max-time 5 "$base/2.0/users/me") || { log "$name: request failed"; return 1; }
	[[ $got == *'"login":"bench@example.com"'* ]] || { log "$name: unexpected body: ${got:0:200}"; return 1; }
	if [[ -n $auth ]]; then
		got=$(curl -sS --max-time 5 -H 'Authorization: Bearer client-secret-must-vanish' "$base/2.0/__bench/auth") || return 1
		[[ $got == "{\"authorization\":\"$auth\"}" ]] || { log "$name: upstream saw ${got:0:200}, want Authorization $auth"; return 1; }
	fi
}

# ------------------------------------------------------------------ maths ---

median() { # numbers on stdin (one per line) -> median, "" when none
	sort -g | awk '{a[NR]=$1} END { if (NR==0) exit; if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'
}

machine_line() {
	local cpu
	cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
	printf '%s, %s cores (nproc)%s' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(nproc)" "${cpu:+, $cpu}"
}
