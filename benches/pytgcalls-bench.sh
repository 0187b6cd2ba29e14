#!/usr/bin/env bash
# The same py-tgcalls bot (benches/pytgcalls_bench.py) with N chats on ringcast and on the real
# ntgcalls 3.0.5 wheel from PyPI, against one sfu-mock, in one run: CPU and RSS per call and the
# largest N each holds with every call verified (docs/performance.md, "py-tgcalls on ringcast").
#
#   benches/pytgcalls-bench.sh [--chats 10,50,100] [--seconds 10] [--engines ringcast,ntgcalls]
#
# --engines ringcast ramps ringcast alone (past what ntgcalls holds on this machine).
#
# Needs root (a network namespace: libwebrtc inside ntgcalls gathers no loopback candidates, so
# both bots run in a namespace joined to sfu-mock by a veth pair, as the load tool's ntgcalls
# baseline does), iproute2, python3 with venv, ffmpeg, the Rust toolchain and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
chats=10,50,100
seconds=10
engines=ringcast,ntgcalls
while [ $# -gt 0 ]; do
    case "$1" in
        --chats) chats="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --engines) engines="$2"; shift 2 ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "pytgcalls-bench: unknown argument $1" >&2; exit 2 ;;
    esac
done

repo=$PWD
target="${CARGO_TARGET_DIR:-target}"
ring_venv="${RINGCAST_PYTHON_VENV:-$PWD/target/python-venv}"
ntg_venv="$PWD/target/ntgcalls-venv"
work=$(mktemp -d)
ns="rcpyb-$$"
veth="rcpb$$"
host_ip=10.215.$(($$ % 250)).1
ns_ip=10.215.$(($$ % 250)).2
sfu_pid=""
cleanup() {
    [ -n "$sfu_pid" ] && kill "$sfu_pid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    ip link del "${veth}h" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "pytgcalls-bench: building sfu-mock and the ringcast wheel" >&2
cargo build --profile ci --locked -p sfu-mock --bins >&2
[ -x "$ring_venv/bin/python" ] || python3 -m venv "$ring_venv"
"$ring_venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.9,<2" "aiohttp>=3.9.3" deprecation
"$ring_venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps py-tgcalls==3.0.0
"$ring_venv/bin/python" -m maturin build --release --interpreter "$ring_venv/bin/python" \
    --manifest-path python/Cargo.toml --out "$work/wheel" >&2
"$ring_venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$work"/wheel/*.whl
[ -x "$ntg_venv/bin/python" ] || python3 -m venv "$ntg_venv"
"$ntg_venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: ntgcalls==3.0.5 "aiohttp>=3.9.3" deprecation
"$ntg_venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps py-tgcalls==3.0.0

ffmpeg -y -loglevel error -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=600" \
    -ac 1 -b:a 96k "$work/tone.mp3"

ip netns add "$ns"
ip link add "${veth}h" type veth peer name "${veth}n"
ip link set "${veth}n" netns "$ns"
ip addr add "$host_ip/30" dev "${veth}h"
ip link set "${veth}h" up
ip netns exec "$ns" ip addr add "$ns_ip/30" dev "${veth}n"
ip netns exec "$ns" ip link set "${veth}n" up
ip netns exec "$ns" ip link set lo up

# 20 ms of latency: at 0 ms ntgcalls often misses its own Connected event (load tool, ntgcalls.rs).
"$target/ci/sfu-mock" --udp "$host_ip:0" --http "$host_ip:0" --allow-remote-control \
    --no-forward --latency-ms 20 >"$work/sfu.json" &
sfu_pid=$!
for _ in $(seq 50); do [ -s "$work/sfu.json" ] && break; sleep 0.1; done
http=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['http'])" "$work/sfu.json")

for engine in ${engines//,/ }; do
    case "$engine" in
        ringcast | ntgcalls) ;;
        *) echo "pytgcalls-bench: unknown engine $engine" >&2; exit 2 ;;
    esac
    venv=$ring_venv
    [ "$engine" = ntgcalls ] && venv=$ntg_venv
    echo "pytgcalls-bench: $engine, chats $chats, $seconds s per step" >&2
    (cd "$work" && ip netns exec "$ns" "$venv/bin/python" "$repo/benches/pytgcalls_bench.py" \
        --engine "$engine" --sfu "$http" --chats "$chats" --seconds "$seconds" \
        --file "$work/tone.mp3") || echo "{\"engine\": \"$engine\", \"error\": \"the bot exited with $?\"}"
done
