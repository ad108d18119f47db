#!/usr/bin/env bash
# Build the Billbridge image from the Containerfile with podman (`make image` runs this).
#
#   scripts/build-image.sh                      # IMAGE=localhost/billbridge:latest
#   IMAGE=billbridge:1.0 BASE=docker.io/library/python:3.11-slim-bookworm scripts/build-image.sh
#
# BASE unset: the official slim Python image if it is here or can be pulled, else a base
# built from Debian's packages (scripts/build-base-image.sh, about a minute, once). As root
# it installs podman, buildah, debootstrap and runc when podman is missing. Unless
# CONTAINERS_CONF is set, podman runs with scripts/containers.conf (runc, open-file limits).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
image="${IMAGE:-localhost/billbridge:latest}"
official="docker.io/library/python:3.11-slim-bookworm"
debian_base="localhost/billbridge-base:bookworm"
host_ca="/etc/ssl/certs/ca-certificates.crt"

if ! command -v podman >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: podman is missing: apt-get install -y podman buildah debootstrap runc" >&2
        exit 1
    fi
    echo "installing podman, buildah, debootstrap, runc"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        podman buildah debootstrap runc >/dev/null
fi
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"

base="${BASE:-}"
if [ -z "$base" ]; then
    if podman image exists "$official"; then
        base="$official"
    elif podman image exists "$debian_base"; then
        base="$debian_base"
    elif timeout 60 podman pull --quiet "$official" >/dev/null 2>&1; then
        base="$official"
    else
        echo "cannot pull $official: building a base from Debian's packages"
        "$here/build-base-image.sh" "$debian_base"
        base="$debian_base"
    fi
fi

secret=()
if [ -r "$host_ca" ]; then
    # pip inside the build trusts what this host trusts (e.g. an HTTPS proxy's CA).
    secret=(--secret "id=hostca,src=$host_ca")
fi
echo "building $image on $base"
started=$SECONDS
# --format docker keeps the HEALTHCHECK (the OCI format has no field for it).
podman build --quiet --format docker --build-arg "BASE=$base" "${secret[@]}" \
    -t "$image" -f "$root/Containerfile" "$root" >/dev/null
echo "built $image in $((SECONDS - started)) s: $(podman image inspect --format '{{.Size}}' "$image" \
    | awk '{printf "%.0f MB", $1 / 1000000}')"
