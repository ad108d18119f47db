#!/usr/bin/env bash
# Build a Debian bookworm base image with Python from Debian's own packages, for machines
# that cannot pull docker.io/library/python (no registry reachable). Needs root, debootstrap
# and podman; takes about a minute. The result works as `--build-arg BASE=...` for the
# Containerfile, like the official slim Python image does.
#
#   scripts/build-base-image.sh [IMAGE]      # default localhost/billbridge-base:bookworm
set -euo pipefail

image="${1:-localhost/billbridge-base:bookworm}"
suite="bookworm"

if [ "$(id -u)" -ne 0 ]; then
    echo "error: debootstrap needs root; run this script as root" >&2
    exit 1
fi
for tool in debootstrap podman; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is missing: apt-get install -y podman buildah debootstrap runc" >&2
        exit 1
    }
done

# The mirror apt already uses (deb822 .sources files or the one-line format).
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}')"
fi
if [ -z "$mirror" ]; then
    mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '/^deb / && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}')"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

rootfs="$(mktemp -d /tmp/billbridge-base.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

echo "debootstrap $suite (minbase, python3) from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    rm -f "$rootfs.log"
    exit 1
}
rm -f "$rootfs.log"
# What only the package manager needs: package lists and downloaded .debs (~90 MB).
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb

echo "import as $image"
tar --numeric-owner -C "$rootfs" -c . \
    | podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$image"
