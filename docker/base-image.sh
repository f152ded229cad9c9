#!/usr/bin/env bash
# A local Debian bookworm + Python 3.11 base for machines that cannot pull from a registry.
# It stands in for python:3.11-slim-bookworm (the Dockerfile's public default): `python`,
# venv support and CA certificates, nothing else. Needs root, debootstrap and podman.
#   docker/base-image.sh [IMAGE_NAME]   (default localhost/modelport-base:bookworm)
set -euo pipefail
name=${1:-localhost/modelport-base:bookworm}
engine=${ENGINE:-podman}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d /tmp/modelport-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
  --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$root" "$mirror" >/dev/null
# As slim images do: no apt lists, docs or caches in the base.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c . | "$engine" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - "$name" >/dev/null
echo "$name"
