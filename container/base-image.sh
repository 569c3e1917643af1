#!/usr/bin/env bash
# Builds the local Debian 12 + Python 3.11 base image (the same Python minor as python:3.11-slim)
# with debootstrap and `podman import`, so the image build needs no external image registry.
# Kept in podman's local storage and reused; prints the image name.
set -euo pipefail

image=localhost/breedrec-base:bookworm-py311
mirror=http://deb.debian.org/debian

if podman image exists "$image"; then
    echo "$image"
    exit 0
fi

rootfs="$(mktemp -d /var/tmp/breedrec-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$mirror" >&2
# Package lists and downloaded .debs are not needed in the image.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import --change 'CMD ["python3"]' - "$image" >&2
echo "$image"
