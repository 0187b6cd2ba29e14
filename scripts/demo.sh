#!/usr/bin/env bash
# Starts an embedded sfu-mock, streams tones into it from a few calls and shows what it verified.
# Extra arguments go to `ringcast demo` (e.g. --calls 50 --chats 5 --seconds 10; --help lists them).
# Installs only what the build needs (scripts/setup.sh without the test peers).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# RINGCAST_PROFILE picks the cargo profile (CI uses `dev`, the profile its tests were built in).
cargo run --profile "${RINGCAST_PROFILE:-release}" --locked -p ringcast-cli --bin ringcast -- demo "$@"
