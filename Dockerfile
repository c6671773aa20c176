# syntax=docker/dockerfile:1
#
# boxproxy container image: a static binary on distroless, running as nonroot.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t boxproxy .
#
# BOXPROXY_LISTEN defaults to 127.0.0.1:8080, which is what a Kubernetes sidecar
# wants (the app container shares the pod's loopback; see deploy/kubernetes/).
# For a standalone `docker run -p 8080:8080`, 127.0.0.1 inside the container is
# unreachable from outside: either use --network host, or set
# BOXPROXY_LISTEN=0.0.0.0:8080 together with BOXPROXY_INBOUND_KEY(_FILE).

FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
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
# /etc/passwd entries for nonroot (uid/gid 65532); nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/boxproxy /boxproxy
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/boxproxy"]
