#!/usr/bin/env bash
# The single test command: brings up the local servers, runs the whole
# workspace's tests against them, then lints the SAM template.
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh -- --nocapture`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/services.sh

# The AWS SDK honours AWS_ENDPOINT_URL, so DynamoDB and EventBridge go to moto.
# Fake credentials: moto accepts any, and the SDK refuses to sign without some.
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:${MOTO_PORT:-5000}}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-mysql://root@127.0.0.1:3306}"

# A target dir outside the clone survives fresh clones (CI), so builds reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/status-target}"

cargo test --workspace "$@"

bash scripts/lint-template.sh
