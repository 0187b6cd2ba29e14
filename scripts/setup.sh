#!/usr/bin/env bash
# Installs what the build needs beyond the Rust toolchain: libopus (linked by the `opus`
# crate through pkg-config), pkg-config itself, a C/C++ compiler, ffmpeg (the decoder of
# the files, URLs and commands calls play), and for the Python package (python/, pyo3):
# python3 with its shared library (python3-dev: a plain cargo build links it) and venv, and a
# virtual environment with maturin (target/python-venv, or $RINGCAST_PYTHON_VENV). That is all
# the demo (scripts/demo.sh) needs.
#
#   scripts/setup.sh                    # build and demo prerequisites only
#   scripts/setup.sh --with-test-peers  # plus the test peers: chromium, aiortc and the real
#                                       # ntgcalls wheel (interop tests; ntgcalls also needs
#                                       # iproute2's `ip` and root for its network namespace)
#                                       # and coturn (TURN tests), and py-tgcalls 3.0.0 in the
#                                       # Python venv (python/tests); scripts/test.sh
#
# Installs only what is missing: safe to run repeatedly.
set -euo pipefail

test_peers=false
for arg in "$@"; do
    case "$arg" in
        --with-test-peers) test_peers=true ;;
        -h | --help)
            sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
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
# ffmpeg (with ffprobe) decodes the files, URLs and commands calls play (engine-runtime's
# play module, `ringcast play --file`), as gotgcall and py-tgcalls do; tests make their media
# with it.
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
# The Python package (crate ringcast-python, pyo3): pyo3's build script runs python3, and a
# plain cargo build of the workspace links libpython (maturin's wheel builds do not), so the
# interpreter's shared library must be there (python3-dev). venv + pip hold maturin.
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import os, sys, sysconfig
lib = os.path.join(sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("LDLIBRARY") or "")
sys.exit(0 if os.path.exists(lib) else 1)' >/dev/null 2>&1 || need+=(python3-dev)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
if $test_peers; then
    # pip for the aiortc interop test (below).
    python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
    # Headless Chromium (libwebrtc) plays the SFU in engine-runtime/tests/chromium_interop.rs.
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    # coturn's turnserver is the TURN server of sfu-mock/tests/p2p_turn.rs and
    # engine-runtime/tests/p2p_engine.rs (relay-only 1:1 calls).
    command -v turnserver >/dev/null 2>&1 || need+=(coturn)
    # `ip` makes the network namespace and veth pair of sfu-mock/tests/ntgcalls_interop.rs and
    # of the load tool's ntgcalls baseline (libwebrtc gathers no loopback candidates).
    command -v ip >/dev/null 2>&1 || need+=(iproute2)
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

# The real ntgcalls 3.0.5 (py-tgcalls' engine, libwebrtc inside) joins sfu-mock in
# sfu-mock/tests/ntgcalls_interop.rs and is a baseline of the load tool (`--systems ntgcalls`).
# Wheels only, as for aiortc.
if $test_peers && ! python3 -c "import ntgcalls; assert ntgcalls.__version__ == '3.0.5'" >/dev/null 2>&1; then
    echo "setup: installing ntgcalls for the interop test" >&2
    python3 -m pip install --quiet --only-binary=:all: ntgcalls==3.0.5 ||
        python3 -m pip install --quiet --break-system-packages --only-binary=:all: ntgcalls==3.0.5
fi

# The Python package's build tool, in a virtual environment of its own (Debian's python3
# refuses system-wide pip installs): `$venv/bin/maturin build --release` in python/ builds the
# wheel. With the test peers, py-tgcalls 3.0.0 joins it, installed with --no-deps (so pip does
# not pull the real ntgcalls) beside its own dependencies: python/tests/py_tgcalls.rs runs it
# on ringcast (and completes this venv itself if it is missing).
venv="${RINGCAST_PYTHON_VENV:-$(cd "$(dirname "$0")/.." && pwd)/target/python-venv}"
if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating the python venv $venv" >&2
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import maturin" >/dev/null 2>&1; then
    echo "setup: installing maturin into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "maturin>=1.9,<2"
fi
if $test_peers && ! "$venv/bin/python" -c "import pytgcalls, aiohttp, deprecation" >/dev/null 2>&1; then
    echo "setup: installing py-tgcalls 3.0.0 into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "aiohttp>=3.9.3" deprecation
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps py-tgcalls==3.0.0
fi
