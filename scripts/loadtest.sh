#!/usr/bin/env bash
# Load against a running local stack (scripts/up.sh in another terminal):
# builds status-loadtest in release in the scripts' shared target dir, then
# runs it with the arguments given, e.g.
#   scripts/loadtest.sh --seconds 20
#   scripts/loadtest.sh --ids 1000 --write-share 0 --users 5000
#   scripts/loadtest.sh --kafka --rate 5000
# The crate docs (loadtest/src/main.rs) list every option. Loopback only,
# bounded in time and requests; by default it touches only users from
# 1,000,000 up, so the README's examples keep their state.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Shared with up.sh, test.sh and bench.sh, so no second release tree is built.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/status-target}"

cargo build --release -p status-loadtest >&2

exec "$CARGO_TARGET_DIR/release/status-loadtest" "$@"
