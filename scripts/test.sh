#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration over loopback UDP, simulator, corpus),
# after checking that the `ringcast` library's dependencies stay its own (scripts/check-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/check-deps.sh
cargo test --workspace --locked "$@"
