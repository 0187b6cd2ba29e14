#!/usr/bin/env bash
# Runs every fuzz target in turn for DURATION seconds on the stable toolchain and fails on any
# crash, naming the input that caused it.
#
#   fuzz/run-all.sh 60            # every target, 60 s each
#   fuzz/run-all.sh 300 ogg_reader call_datagrams   # only these
#   fuzz/run-all.sh 60 p2p_decrypt p2p_message       # the 1:1-call signaling targets
#
# Without target names, every [[bin]] in Cargo.toml runs (`cargo fuzz list`), so a new target
# (p2p_decrypt and p2p_message included) is picked up without editing this script.
#
# Each target starts from a fresh, git-ignored work corpus (corpus-work/<target>, where
# libFuzzer writes what it finds) plus the checked-in seeds (corpus/<target>, read only).
# Logs go to corpus-work/<target>.log, crashing inputs to artifacts/<target>/.
set -euo pipefail

DURATION="${1:?usage: run-all.sh SECONDS [TARGET...]}"
shift
cd "$(dirname "$0")"

# cargo-fuzz passes -Zsanitizer=address and other nightly-only flags to rustc; the stable
# compiler accepts them when RUSTC_BOOTSTRAP=1 (see README.md).
export RUSTC_BOOTSTRAP=1
# The one deliberate leak (CallCrypto::provider, see lsan.supp) is not a finding.
export LSAN_OPTIONS="suppressions=$PWD/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
# Shared machines: one compiler job.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing; installing it"
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "building ${#targets[@]} targets"
cargo fuzz build >/dev/null

failed=0
summary=()
for t in "${targets[@]}"; do
    work="corpus-work/$t"
    rm -rf "$work"
    mkdir -p "$work" "artifacts/$t"
    log="corpus-work/$t.log"
    echo "== $t: ${DURATION}s"
    # One process (no -jobs/-fork: those move the output into fuzz-N.log files and the
    # machine is shared). -timeout catches an input that hangs; -print_final_stats gives the
    # execution count.
    set +e
    cargo fuzz run "$t" "$work" "corpus/$t" -- \
        -max_total_time="$DURATION" -timeout=20 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1)
    execs="${execs:-?}"
    if [ "$rc" -eq 0 ]; then
        summary+=("$(printf '%-22s ok     %10s execs' "$t" "$execs")")
    else
        failed=1
        artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n1 | sed 's/Test unit written to //')
        summary+=("$(printf '%-22s FAILED %10s execs  artifact: %s  log: %s' "$t" "$execs" "${artifact:-none}" "fuzz/$log")")
        grep -E -m1 -A15 'panicked|ERROR: libFuzzer|ERROR: AddressSanitizer' "$log" || tail -n 30 "$log"
    fi
    echo "${summary[-1]}"
done

echo
echo "== summary (${DURATION}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
