#!/usr/bin/env bash
# End-to-end image test (run by .ci/run after `make test`; `make e2e-images` runs it alone):
# installs the container tools from Debian if missing, builds the local base, the storage and
# the sklearn images, then tests/e2e/serve_images.py fills a volume from a moto S3 server with
# the storage image and serves it with the sklearn image (KServe's args, read-only root
# filesystem, uid 1000), checking V1, V2 REST and gRPC. Every container uses the host's network
# and every server listens on 127.0.0.1.
#   PYTHON=.venv/bin/python tests/e2e/images.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
# E2E_BASE_IMAGE: a base to pull (e.g. python:3.11-slim-bookworm where registries are
# reachable); unset, a local Debian base is built with debootstrap (registry pulls fail here).
BASE=${E2E_BASE_IMAGE:-localhost/modelport-base:bookworm}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/docker/containers.conf}

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if [ ${#need[@]} -gt 0 ]; then
  echo "e2e-images: installing ${need[*]} from Debian packages"
  $sudo apt-get update -q >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${need[@]}" uidmap fuse-overlayfs >/dev/null
fi

# Every build leaves untagged images behind: the builder stage and the image a new tag replaced
# (about 1.5 GB per run). Left there, repeated runs fill the disk, so remove modelport's own
# untagged images before building and when done, and refuse clearly when space is short.
prune_untagged() {
  podman image prune -f --filter label=io.modelport.stage=builder >/dev/null || true
  podman image prune -f --filter label=io.modelport.runtime >/dev/null || true
}
trap prune_untagged EXIT
prune_untagged
store=$(podman info --format '{{.Store.GraphRoot}}')
free_kib=$(df -Pk "$store" | awk 'NR == 2 {print $4}')
need_kib=$((4 * 1024 * 1024))
if [ "$free_kib" -lt "$need_kib" ]; then
  echo "e2e-images: only $((free_kib / 1024)) MiB free under $store; the builds need about" \
    "$((need_kib / 1024)) MiB (podman image prune / podman system prune frees what is unused)" >&2
  exit 1
fi

start=$(date +%s)
if [ -z "${E2E_BASE_IMAGE:-}" ] && ! podman image exists "$BASE"; then
  make --no-print-directory base-image LOCAL_BASE="$BASE"
fi
log=$(mktemp /tmp/e2e-images-build.XXXXXX)
make --no-print-directory image-storage image-sklearn BASE_IMAGE="$BASE" >"$log" 2>&1 \
  || { tail -40 "$log"; exit 1; }
echo "e2e-images: base, storage and sklearn images ready in $(( $(date +%s) - start ))s"
make --no-print-directory image-sizes BASE_IMAGE="$BASE" RUNTIMES=sklearn
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
"$PYTHON" tests/e2e/serve_images.py --version "$version"
