#!/usr/bin/env bash
# Builds a local Debian 12 + Python 3.11 base image (the same Python minor as python:3.11-slim)
# with debootstrap and `podman import`, so the image build needs no external image registry.
# Kept in podman's local storage and reused; prints the image name.
#
#   container/base-image.sh build    python3 with venv (and its bundled pip): the build stage
#   container/base-image.sh runtime  python3 only, no docs, man pages or locales: the served
#                                    image, which gets the finished virtualenv and nothing to
#                                    install with
set -euo pipefail

kind="${1:-build}"
case "$kind" in
    build) packages=python3,python3-venv,ca-certificates ;;
    runtime) packages=python3,ca-certificates ;;
    *)
        echo "usage: $0 [build|runtime]" >&2
        exit 2
        ;;
esac
image="localhost/breedrec-$kind:bookworm-py311"
mirror=http://deb.debian.org/debian

if podman image exists "$image"; then
    echo "$image"
    exit 0
fi

rootfs="$(mktemp -d /var/tmp/breedrec-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >&2
# Package lists and downloaded .debs are not needed in either image.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
if [ "$kind" = runtime ]; then
    # Nothing in the served image reads documentation or translated messages.
    rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*
fi
tar -C "$rootfs" -c . | podman import --change 'CMD ["python3"]' - "$image" >&2
echo "$image"
