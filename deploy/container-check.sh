#!/usr/bin/env bash
# Checks the container image as far as this machine allows (no Docker engine,
# no registry access): buildah builds the Dockerfile's runtime stage with the
# binary built here in place of the build stage, the image's configuration is
# checked (entrypoint, numeric non-root user, ports), and the image is run
# (buildah run, chroot isolation, host network): /healthz and /readyz answer
# on the admin listener, the data port serves, and POST /quitquitquit ends the
# container with exit 0. A cross-compile for linux/arm64 checks that the
# TARGETOS/TARGETARCH build works for another platform.
#
# Not checked here (README.md, "Container and Kubernetes"): the Dockerfile's
# build stage and the distroless base (both need the registry; the runtime
# stage is built FROM scratch instead), and a multi-platform image.
#
#   bash deploy/container-check.sh        (as root, with buildah installed)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "container check: $*" >&2; exit 1; }
command -v buildah >/dev/null 2>&1 || fail "buildah is missing: apt-get install -y buildah"

work=$(mktemp -d)
tag="localhost/boxproxy-check:$$"
ctr=""
runpid=""
cleanup() {
  if [ -n "$runpid" ] && kill -0 "$runpid" 2>/dev/null; then kill "$runpid" 2>/dev/null || true; fi
  if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi
  buildah rmi "$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "-- static binary for linux/$(go env GOARCH), and a cross-compile for linux/arm64"
mkdir -p "$work/ctx/out"
CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X main.version=container-check" -o "$work/ctx/out/boxproxy" .
CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -o "$work/boxproxy-arm64" .

echo "-- buildah: the Dockerfile's runtime stage around that binary"
buildah bud --quiet --isolation chroot --layers=false \
  --build-arg RUNTIME_IMAGE=scratch --build-context build="$work/ctx" \
  --build-arg TARGETOS=linux --build-arg TARGETARCH="$(go env GOARCH)" \
  -f Dockerfile -t "$tag" . >/dev/null

cfg=$(buildah inspect --type image "$tag")
field() { printf '%s' "$cfg" | python3 -c 'import json,sys; c=json.load(sys.stdin)["OCIv1"]["config"]; print(json.dumps(c.get(sys.argv[1])))' "$1"; }
[ "$(field User)" = '"65532:65532"' ] || fail "image user is $(field User), want 65532:65532"
[ "$(field Entrypoint)" = '["/boxproxy"]' ] || fail "image entrypoint is $(field Entrypoint), want [\"/boxproxy\"]"
case "$(field ExposedPorts)" in *8080/tcp*9090/tcp*) ;; *) fail "image exposes $(field ExposedPorts), want 8080 and 9090" ;; esac

echo "-- run the image and probe it"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
data=$(free_port); admin=$(free_port)
ctr=$(buildah from --quiet "$tag")
buildah run --isolation chroot --network host \
  -e BOXPROXY_DEVELOPER_TOKEN=container-check-token-not-real \
  -e BOXPROXY_LISTEN=127.0.0.1:"$data" -e BOXPROXY_ADMIN_LISTEN=127.0.0.1:"$admin" \
  -e BOXPROXY_QUIT_ENDPOINT=true \
  "$ctr" -- /boxproxy >"$work/log" 2>&1 &
runpid=$!
ok=""
for _ in $(seq 1 100); do
  if curl -fsS -m 2 -H 'Host: 10.0.0.7:9090' "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1; then ok=1; break; fi
  kill -0 "$runpid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$ok" ] || { cat "$work/log" >&2; fail "/healthz on the admin listener did not answer"; }
readyz=$(curl -fsS -m 5 "http://127.0.0.1:$admin/readyz") || fail "/readyz on the admin listener failed"
case "$readyz" in *'"status":"ready"'*) ;; *) fail "/readyz answered $readyz" ;; esac
curl -fsS -m 5 "http://127.0.0.1:$data/healthz" >/dev/null || fail "/healthz on the data port failed"
uid=""
for p in $(pgrep -x boxproxy || true); do
  case "$(readlink "/proc/$p/root" 2>/dev/null)" in *buildah*) uid=$(stat -c %u "/proc/$p") ;; esac
done
[ "$uid" = 65532 ] || fail "the container's process runs as uid '$uid', want 65532"
curl -fsS -m 5 -X POST "http://127.0.0.1:$data/quitquitquit" >/dev/null || fail "POST /quitquitquit failed"
rc=0; wait "$runpid" || rc=$?
runpid=""
[ "$rc" = 0 ] || { cat "$work/log" >&2; fail "the container exited $rc after /quitquitquit, want 0"; }
grep -q '"message":"boxproxy serving"' "$work/log" || fail "no start-up line in the container's log"
if grep -q container-check-token-not-real "$work/log"; then fail "the developer token appears in the container's log"; fi
echo "container check: ok (image built by buildah from the Dockerfile's runtime stage, ran as 65532, probes answered, exit 0)"
