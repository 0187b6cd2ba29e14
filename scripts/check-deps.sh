#!/usr/bin/env bash
# Fails if a crate that only the tools need comes back into the `ringcast` library's normal
# dependencies, or if the simulator's `sim` feature can be switched on through them: an
# application embedding `ringcast` must not compile an SFU, an HTTP server or client, or a log
# subscriber (issue 11). Run by scripts/test.sh; prints what it found.
#
# rustfft was on this list while only sfu-mock's audio analysis used an FFT; since issue 13 the
# library resamples PCM at other rates with rubato's FFT resampler (media::resample), which
# brings rustfft in through realfft, so it is allowed now.
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden=(sfu-mock tiny_http ureq tracing-subscriber ringcast-sim ringcast-cli)

tree=$(cargo tree --locked -p ringcast -e normal --prefix none --format '{p}' | sort -u)
found=()
for crate in "${forbidden[@]}"; do
    if grep -q "^$crate v" <<<"$tree"; then
        found+=("$crate")
    fi
done
# Features of the library's normal dependency graph: `sim` (ringcast-core's simulator) must
# not be on.
sim=$(cargo tree --locked -p ringcast -e normal -e features --prefix none --format '{p}' |
    grep -E '"sim"' | sort -u || true)

echo "check-deps: ringcast's normal dependencies: $(wc -l <<<"$tree") crates"
if [ ${#found[@]} -gt 0 ] || [ -n "$sim" ]; then
    for crate in "${found[@]}"; do
        echo "check-deps: FAIL: ringcast depends on $crate; how:" >&2
        cargo tree --locked -p ringcast -e normal -i "$crate" >&2 || true
    done
    if [ -n "$sim" ]; then
        echo "check-deps: FAIL: the sim feature is on in ringcast's normal build:" >&2
        echo "$sim" >&2
    fi
    exit 1
fi
echo "check-deps: ok: none of ${forbidden[*]} and no sim feature"
