#!/usr/bin/env bash
# Installs what `make container-test` needs with apt when missing: podman, runc (this kernel
# cannot run crun) and debootstrap (builds the local base image), then checks podman works.
set -euo pipefail

missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
fi
podman --runtime runc info >/dev/null
