#!/usr/bin/env bash
# What each built image adds on top of its base, in MB (10^6 bytes, as `podman images` shows).
#   docker/sizes.sh BASE_IMAGE REGISTRY MODELPORT_VERSION NAME...
set -euo pipefail
engine=${ENGINE:-podman}
base=$1 registry=$2 version=$3
shift 3
size() { "$engine" image inspect --format '{{.Size}}' "$1"; }
base_size=$(size "$base")
printf '%-12s %10s %10s\n' image "total MB" "added MB"
for name in "$@"; do
  image="$registry/$name:$version"
  if ! total=$(size "$image" 2>/dev/null); then
    printf '%-12s %10s %10s\n' "$name" "-" "not built"
    continue
  fi
  printf '%-12s %10d %10d\n' "$name" $((total / 1000000)) $(((total - base_size) / 1000000))
done
