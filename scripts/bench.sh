#!/usr/bin/env bash
# The benchmark command (DESIGN §10): brings up the local servers, builds the
# bench and the three function binaries in release, and prints one line per
# figure, `bench <name> key=value ...` (progress goes to stderr).
# Arguments go to the bench, e.g. `scripts/bench.sh --only cold_init --runs 3`;
# `scripts/bench.sh --help` lists them. docs/BENCHMARKS.md explains the
# figures. Every run uses its own database, key prefix and tables, and
# removes them; the servers must be on this machine.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/services.sh >&2

source scripts/aws-env.sh
export BENCH_REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
export BENCH_DATABASE_URL="${BENCH_DATABASE_URL:-mysql://root@127.0.0.1:3306}"

# Shared with scripts/test.sh, so a warm target dir is reused.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/status-target}"

# The function binaries are measured as shipped: release profile, the same
# binaries cargo-lambda builds (for the host's architecture here).
cargo build --release -p status-bench -p aggregator -p idle-scanner -p status-api >&2

exec "$CARGO_TARGET_DIR/release/status-bench" --bin-dir "$CARGO_TARGET_DIR/release" "$@"
