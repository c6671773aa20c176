#!/usr/bin/env bash
# Large transfers across a network link: Box is not on loopback.
#
#   sudo bash bench/link.sh        (root: it makes a network namespace)
#
# Puts the bench upstream in a network namespace of its own, joined to this one
# by a veth pair whose both directions are shaped to LINK_RATE with tc's token
# bucket filter (like a pod's link to Box), and boxproxy and curl here, as a
# sidecar and its application would be. Then times a SIZE_MIB upload and
# download straight to the upstream across the link and through boxproxy
# (loopback to boxproxy, then the link), interleaved, and prints the ratio and
# boxproxy's peak RSS. bench/run.sh's transfer check is the loopback-only
# version of this, where the copying on one machine is the limit, not a link.
#
# The two ends use link-local addresses (169.254.77.1 and .2 on a /30) that
# exist only on this veth pair; everything is removed at exit.
#
# Environment (all optional): LINK_RATE=1gbit (a tc rate; 0 = not shaped),
# SIZE_MIB=200, TRANSFER_ROUNDS=3 (median), BOXPROXY_BIN=, BENCH_NO_INSTALL=1.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=transfer.sh
source "$BENCH_DIR/transfer.sh"

LINK_RATE=${LINK_RATE:-1gbit}
NS=bpbench$$
VETH_HOST=bpb$$h
VETH_NS=bpb$$n
HOST_IP=169.254.77.1
NS_IP=169.254.77.2

[[ $(id -u) -eq 0 ]] || die "run as root: it makes a network namespace (ip netns) and shapes a link (tc)"
if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
	[[ ${BENCH_NO_INSTALL:-0} == 1 ]] && die "ip and tc (iproute2) are missing"
	log "installing iproute2"
	apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi
command -v curl >/dev/null || die "curl is missing"

bench_init
link_cleanup() {
	ip netns del "$NS" 2>/dev/null || true # takes the veth pair with it
}
trap 'link_cleanup; bench_cleanup' EXIT

shape() { # DEV [netns exec prefix...]
	local dev=$1
	shift
	[[ $LINK_RATE == 0 ]] && return 0
	"$@" tc qdisc add dev "$dev" root tbf rate "$LINK_RATE" burst 256kb latency 20ms
}

ip netns add "$NS"
ip link add "$VETH_HOST" type veth peer name "$VETH_NS"
ip link set "$VETH_NS" netns "$NS"
ip addr add "$HOST_IP/30" dev "$VETH_HOST"
ip link set "$VETH_HOST" up
ip netns exec "$NS" ip addr add "$NS_IP/30" dev "$VETH_NS"
ip netns exec "$NS" ip link set "$VETH_NS" up
ip netns exec "$NS" ip link set lo up
shape "$VETH_HOST"
shape "$VETH_NS" ip netns exec "$NS"
log "link: $HOST_IP <-> $NS_IP (namespace $NS), each direction shaped to ${LINK_RATE/#0/unshaped}"

bench_build
[[ $HAVE_BOXPROXY == 1 ]] || die "boxproxy does not build"
UPSTREAM_PORT=9000
ip netns exec "$NS" "$BIN_DIR/upstream" -addr "$NS_IP:$UPSTREAM_PORT" >"$BENCH_TMP/upstream.log" 2>&1 &
UPSTREAM_PID=$!
BENCH_PIDS+=("$UPSTREAM_PID")
wait_http "http://$NS_IP:$UPSTREAM_PORT/2.0/users/me" 10 "$UPSTREAM_PID" || die "the upstream did not start across the link"

BOXPROXY_PORT=$(free_port "${BOXPROXY_PORT:-}")
BOXPROXY_DEVELOPER_TOKEN="$BENCH_TOKEN" \
	BOXPROXY_API_URL="http://$NS_IP:$UPSTREAM_PORT" \
	BOXPROXY_UPLOAD_URL="http://$NS_IP:$UPSTREAM_PORT" \
	BOXPROXY_LISTEN="127.0.0.1:$BOXPROXY_PORT" \
	BOXPROXY_LOG_LEVEL=warn \
	"$BOXPROXY_EXE" >"$BENCH_TMP/boxproxy.log" 2>&1 &
BOXPROXY_PID=$!
BENCH_PIDS+=("$BOXPROXY_PID")
wait_http "http://127.0.0.1:$BOXPROXY_PORT/healthz" 15 "$BOXPROXY_PID" || die "boxproxy did not start"

size_mib=${SIZE_MIB:-200}
rounds=${TRANSFER_ROUNDS:-3}
n=$((size_mib * 1024 * 1024))
file="$BENCH_TMP/body.bin"
head -c "$n" /dev/urandom >"$file"
declare -A base=([direct]="http://$NS_IP:$UPSTREAM_PORT" [boxproxy]="http://127.0.0.1:$BOXPROXY_PORT")
declare -A med hwm

for kind in up down; do
	reset_hwm "$BOXPROXY_PID" || true
	declare -A vals=()
	for ((r = 1; r <= rounds; r++)); do
		for t in direct boxproxy; do
			v=$(transfer_one "$kind" "${base[$t]}" "$file" "$n")
			log "$(printf '%-4s round %d %-9s %s MB/s' "$kind" "$r" "$t" "$v")"
			[[ $v == fail ]] || vals[$t]+="$v"$'\n'
		done
	done
	for t in direct boxproxy; do
		med[$kind.$t]=$(printf '%s' "${vals[$t]:-}" | median | awk '{ printf "%.0f", $1 }')
	done
	hwm[$kind]=$(kib_field "$BOXPROXY_PID" VmHWM)
	unset vals
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
{
	echo "## ${size_mib} MiB transfers across a link shaped to ${LINK_RATE/#0/unshaped} (bench/link.sh)"
	echo
	echo "- $(machine_line); the upstream in its own network namespace behind a veth pair, curl and boxproxy here."
	echo "- MB/s = 10^6 bytes/s, median of $rounds interleaved rounds; boxproxy: curl → boxproxy on loopback → the link → upstream."
	echo
	echo "| transfer | direct MB/s | boxproxy MB/s | boxproxy/direct | boxproxy peak RSS MiB |"
	echo "|---|---:|---:|---:|---:|"
	for kind in up down; do
		label="upload ${size_mib} MiB (PUT)"
		[[ $kind == down ]] && label="download ${size_mib} MiB (GET)"
		echo "| $label | ${med[$kind.direct]} | ${med[$kind.boxproxy]} | $(ratio "${med[$kind.boxproxy]}" "${med[$kind.direct]}") | $(mib "${hwm[$kind]}") |"
	done
} | tee "$RESULTS_DIR/link.md"
log "written to bench/results/link.md"
