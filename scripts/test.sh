#!/usr/bin/env bash
# The single test command: brings up the local servers, runs the whole
# workspace's tests against them, fuzzes the HTTP API against openapi.yaml
# with schemathesis (scripts/api-fuzz.sh, about 2.5 minutes), then lints the
# SAM template.
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh -- --nocapture`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/services.sh

source scripts/aws-env.sh
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-mysql://root@127.0.0.1:3306}"

# A target dir outside the clone survives fresh clones (CI), so builds reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/status-target}"

cargo test --workspace "$@"

# The stack it fuzzes is the dev build that the end-to-end test just made.
bash scripts/api-fuzz.sh

bash scripts/lint-template.sh
