#!/usr/bin/env bash
# Runs every fuzz target in turn on the stable toolchain and fails on any crash, naming the
# input that caused it. Three ways to say how long:
#
#   fuzz/run-all.sh --total 600   # 600 s in all, split evenly across the targets
#   fuzz/run-all.sh 60            # 60 s per target
#   fuzz/run-all.sh 300 ogg_reader call_datagrams   # only these, 300 s each
#   fuzz/run-all.sh --total 120 p2p_decrypt p2p_message   # 60 s each
#   fuzz/run-all.sh --runs 10000000 group_join      # until 10 million executions
#
# At the end it prints one line per target (executions, executions per second, libFuzzer's
# final coverage `cov` and features `ft`, result) and the same as a Markdown table.
#
# Without target names, every [[bin]] in Cargo.toml runs (`cargo fuzz list`), so a new target
# (p2p_decrypt and p2p_message included) is picked up without editing this script.
#
# Each target starts from a fresh, git-ignored work corpus (corpus-work/<target>, where
# libFuzzer writes what it finds) plus the checked-in seeds (corpus/<target>, read only).
# Logs go to corpus-work/<target>.log, crashing inputs to artifacts/<target>/.
set -euo pipefail

usage="usage: run-all.sh SECONDS | --total SECONDS | --runs N  [TARGET...]"
mode=per-target
case "${1:?$usage}" in
    --total) mode=total; BUDGET="${2:?$usage}"; shift 2 ;;
    --runs) mode=runs; RUNS="${2:?$usage}"; shift 2 ;;
    -*) echo "$usage" >&2; exit 2 ;;
    *) BUDGET="$1"; shift ;;
esac
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

case "$mode" in
    total)
        DURATION=$((BUDGET / ${#targets[@]}))
        if [ "$DURATION" -lt 1 ]; then DURATION=1; fi
        limit=(-max_total_time="$DURATION")
        what="${BUDGET}s in all, ${DURATION}s per target" ;;
    per-target)
        DURATION="$BUDGET"
        limit=(-max_total_time="$DURATION")
        what="${DURATION}s per target" ;;
    runs)
        limit=(-runs="$RUNS")
        what="$RUNS executions per target" ;;
esac

echo "building ${#targets[@]} targets"
cargo fuzz build >/dev/null

failed=0
summary=()
table=()
for t in "${targets[@]}"; do
    work="corpus-work/$t"
    rm -rf "$work"
    mkdir -p "$work" "artifacts/$t"
    log="corpus-work/$t.log"
    echo "== $t: ${limit[*]}"
    # One process (no -jobs/-fork: those move the output into fuzz-N.log files and the
    # machine is shared). -timeout catches an input that hangs; -print_final_stats gives the
    # execution count and rate.
    # call_datagrams keeps one connected world across inputs and control_api one SFU
    # (README.md): their allocations outlive an input, so libFuzzer's per-input leak check (a
    # full LeakSanitizer scan whenever mallocs and frees differ) would run on almost every
    # input: a 5x slowdown for call_datagrams, half of control_api's time. LeakSanitizer
    # still checks the whole process when it exits.
    extra=()
    case "$t" in call_datagrams | control_api) extra=(-detect_leaks=0) ;; esac
    started=$(date +%s)
    set +e
    cargo fuzz run "$t" "$work" "corpus/$t" -- \
        "${limit[@]}" "${extra[@]}" -timeout=20 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    secs=$(($(date +%s) - started))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1)
    execs="${execs:-?}"
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1)
    rate="${rate:-?}"
    # The last status line libFuzzer printed: "#N  DONE cov: C ft: F corp: ..."
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n1 | awk '{print $2 "/" $4}')
    cov="${cov:-?}"
    if [ "$rc" -eq 0 ]; then
        result=ok
        summary+=("$(printf '%-22s ok     %11s execs %8s/s  cov/ft %-11s %5ss' "$t" "$execs" "$rate" "$cov" "$secs")")
    else
        failed=1
        artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n1 | sed 's/Test unit written to //')
        result="FAILED (${artifact:-no artifact})"
        summary+=("$(printf '%-22s FAILED %11s execs %8s/s  cov/ft %-11s %5ss  artifact: %s  log: %s' "$t" "$execs" "$rate" "$cov" "$secs" "${artifact:-none}" "fuzz/$log")")
        grep -E -m1 -A15 'panicked|ERROR: libFuzzer|ERROR: AddressSanitizer' "$log" || tail -n 30 "$log"
    fi
    table+=("| \`$t\` | $rate | $execs | $cov | $secs s | $result |")
    echo "${summary[-1]}"
done

echo
echo "== summary ($what)"
printf '%s\n' "${summary[@]}"
echo
echo "| target | exec/s | executions | cov/ft | time | result |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${table[@]}"
exit "$failed"
