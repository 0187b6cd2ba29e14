#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration over loopback UDP, simulator, corpus),
# after checking that the `ringcast` library's dependencies stay its own (scripts/check-deps.sh).
# Installs the build prerequisites and the test peers (chromium, coturn, aiortc) first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --with-test-peers
./scripts/check-deps.sh
cargo test --workspace --locked "$@"
