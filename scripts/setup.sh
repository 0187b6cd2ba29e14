#!/usr/bin/env bash
# Installs what the build needs beyond the Rust toolchain: libopus (linked by the `opus`
# crate through pkg-config), pkg-config itself and a C/C++ compiler. That is all the demo
# (scripts/demo.sh) needs.
#
#   scripts/setup.sh                    # build and demo prerequisites only
#   scripts/setup.sh --with-test-peers  # plus the test peers: chromium and aiortc (interop
#                                       # tests) and coturn (TURN tests); scripts/test.sh
#
# Installs only what is missing: safe to run repeatedly.
set -euo pipefail

test_peers=false
for arg in "$@"; do
    case "$arg" in
        --with-test-peers) test_peers=true ;;
        -h | --help)
            sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "setup: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists opus 2>/dev/null || need+=(libopus-dev)
command -v c++ >/dev/null 2>&1 || need+=(g++)
if $test_peers; then
    # python3 + pip for the aiortc interop test (below).
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
    # Headless Chromium (libwebrtc) plays the SFU in engine-runtime/tests/chromium_interop.rs.
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    # coturn's turnserver is the TURN server of sfu-mock/tests/p2p_turn.rs and
    # engine-runtime/tests/p2p_engine.rs (relay-only 1:1 calls).
    command -v turnserver >/dev/null 2>&1 || need+=(coturn)
fi

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

# Loopback load (hundreds of calls into one sfu-mock port) needs socket buffers larger than
# Linux's 208 KiB default cap. Raise the cap when we may; tests still run without it, with
# more kernel drops under load.
for knob in net.core.rmem_max net.core.wmem_max; do
    current=$(sysctl -n "$knob" 2>/dev/null || echo 0)
    if [ "$current" -lt 8388608 ] && [ -w "/proc/sys/${knob//.//}" ]; then
        sysctl -qw "$knob=8388608" || true
    fi
done

# aiortc (an independent WebRTC stack) plays the SFU in engine-runtime/tests/aiortc_interop.rs
# and the other end of a 1:1 call in sfu-mock/tests/aiortc_p2p.rs.
# Wheels only: no compiler toolchain for its C extensions.
if $test_peers && ! python3 -c "import aiortc" >/dev/null 2>&1; then
    echo "setup: installing aiortc for the interop test" >&2
    # Debian's own python3 refuses system-wide pip installs (PEP 668) unless told otherwise.
    python3 -m pip install --quiet --only-binary=:all: aiortc==1.16.0 ||
        python3 -m pip install --quiet --break-system-packages --only-binary=:all: aiortc==1.16.0
fi
