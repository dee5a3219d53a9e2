#!/usr/bin/env bash
# The container image's size and start-up, where the registries deploy/Dockerfile pulls from
# (Docker Hub's rust image, gcr.io's distroless) are out of reach: the same runtime content —
# the stripped release binary, the glibc libraries it links (libc, libm, libgcc_s, the loader:
# what distroless/cc ships), the CA bundle, uid 65532 — layered FROM scratch with a local
# docker daemon, then timed from `docker run` to the first /readyz 200 (5 runs).
#   bench/image.sh [target/release/gatehouse]
# Needs docker (a running daemon) and curl. Listens on 127.0.0.1:18501-18502 only.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/gatehouse}
work=$(mktemp -d)
trap 'docker rm -f gatehouse-image-bench >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cp "$BIN" "$work/gatehouse" && strip "$work/gatehouse"
mkdir -p "$work/root/lib64" "$work/root/lib/x86_64-linux-gnu" "$work/root/etc/ssl/certs" "$work/root/etc/gatehouse" "$work/root/tmp"
for lib in $(ldd "$work/gatehouse" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
  cp -L "$lib" "$work/root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$work/root/etc/ssl/certs/"
printf 'root:x:0:0::/root:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n' >"$work/root/etc/passwd"
cat >"$work/root/etc/gatehouse/gatehouse.yaml" <<YAML
listen: 0.0.0.0:8080
admin: { listen: 0.0.0.0:9901 }
routes:
  - name: open
    authorizerType: NONE
    upstream: { url: "http://127.0.0.1:9" }
YAML
cp "$work/gatehouse" "$work/root/gatehouse"
cat >"$work/Dockerfile" <<'DOCKER'
FROM scratch
COPY root/ /
USER 65532:65532
ENV GATEHOUSE_CONFIG=/etc/gatehouse/gatehouse.yaml
ENTRYPOINT ["/gatehouse"]
CMD ["serve"]
DOCKER
DOCKER_BUILDKIT=0 docker build -q -t gatehouse-image-bench "$work" >/dev/null
size=$(docker image inspect gatehouse-image-bench --format '{{.Size}}')
echo "image: $((size / 1024 / 1024)) MiB ($size bytes); binary stripped: $(stat -c %s "$work/gatehouse") bytes"
for run in 1 2 3 4 5; do
  docker rm -f gatehouse-image-bench >/dev/null 2>&1 || true
  t0=$(date +%s%N)
  docker run -d --name gatehouse-image-bench --read-only -p 127.0.0.1:18501:8080 -p 127.0.0.1:18502:9901 gatehouse-image-bench >/dev/null
  until [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18502/readyz)" = 200 ]; do
    sleep 0.005
    (( $(date +%s%N) - t0 > 20000000000 )) && { docker logs gatehouse-image-bench >&2; exit 1; }
  done
  echo "run $run: docker run to /readyz 200: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
done
docker rm -f gatehouse-image-bench >/dev/null
# Docker's own share: a container of the same image that only prints its version and exits.
for run in 1 2 3; do
  t0=$(date +%s%N)
  docker run --rm gatehouse-image-bench --version >/dev/null
  echo "docker run --version (docker's own cost) $run: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
done
docker rmi gatehouse-image-bench >/dev/null
