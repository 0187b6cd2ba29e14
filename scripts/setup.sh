#!/usr/bin/env bash
# Installs what the build needs beyond the Rust toolchain: libopus (linked by the `opus`
# crate through pkg-config) and pkg-config itself. Safe to run repeatedly.
set -euo pipefail

need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists opus 2>/dev/null || need+=(libopus-dev)
command -v c++ >/dev/null 2>&1 || need+=(g++)

if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
        $sudo apt-get update >/dev/null
        $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
    }
fi
