# syntax=docker/dockerfile:1
#
# boxproxy container image: a static binary on distroless, running as nonroot
# (uid/gid 65532), for every platform Go builds for:
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=$(git describe --tags --always) -t registry.example.com/boxproxy:v0.1.0 .
#
# The build stage runs on the builder's own platform ($BUILDPLATFORM) and
# cross-compiles for $TARGETOS/$TARGETARCH, which BuildKit, buildah and podman
# set from --platform; nothing is emulated.
#
# Base images are fully qualified (buildah and podman resolve no short names)
# and pinned by digest; the tag beside the digest says what it is. To move to
# a newer base, replace both (`crane digest IMAGE:TAG`, or
# `docker buildx imagetools inspect IMAGE:TAG`). The build arguments
# GO_IMAGE and RUNTIME_IMAGE exist for mirrors and for the container check of
# .ci/run (see README.md, "Container and Kubernetes").
#
# BOXPROXY_LISTEN defaults to 127.0.0.1:8080, which is what a Kubernetes sidecar
# wants (the app container shares the pod's loopback; see deploy/kubernetes/),
# with BOXPROXY_ADMIN_LISTEN=0.0.0.0:9090 for kubelet's probes and Prometheus.
# For a standalone `docker run -p 8080:8080`, 127.0.0.1 inside the container is
# unreachable from outside: either use --network host, or set
# BOXPROXY_LISTEN=0.0.0.0:8080 together with BOXPROXY_INBOUND_KEY(_FILE).

ARG GO_IMAGE=docker.io/library/golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/boxproxy .

# static-debian12 carries the CA certificates (for https://api.box.com) and
# /etc/passwd entries for nonroot; nothing else: no shell, no package manager.
FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=build /out/boxproxy /boxproxy
# Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
USER 65532:65532
# 8080: BOXPROXY_LISTEN (the data port); 9090: BOXPROXY_ADMIN_LISTEN, when set.
EXPOSE 8080 9090
ENTRYPOINT ["/boxproxy"]
