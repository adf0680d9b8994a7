#!/usr/bin/env bash
# The one command that brings the whole service up on this machine, no
# docker (DESIGN §9): checks the prerequisites (scripts/prereqs.sh), starts
# Redis, MariaDB, moto and the Kafka broker if they are not running,
# builds the local stack and serves the functions (all but the WebSocket
# authorizer, which the `X-Local-User` header stands in for):
#   HTTP API    http://127.0.0.1:${LOCAL_API_PORT:-3000}   (as `sam local start-api`)
#   Invoke API  http://127.0.0.1:${LOCAL_INVOKE_PORT:-3001} (as `sam local start-lambda`)
#   WebSocket   ws://127.0.0.1:${LOCAL_WS_PORT:-3002}, with the @connections management API
#   Kafka       127.0.0.1:9092, topic presence.updates, polled into AggregatorFunction
# The stack creates its database, tables, bus, topic and queues itself.
# Ctrl-C (or SIGTERM) stops it, and stops moto and the Kafka broker too if
# this script was the one that started them; Redis and MariaDB are machine
# services and stay up.
# Every variable online-status-local reads (DESIGN §11, LOCAL_*) passes through.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# First of all: what this machine must already have (Rust, gcc/make, Python
# with pip, Redis, MariaDB), named in one line if anything is missing.
bash scripts/prereqs.sh

MOTO_PORT="${MOTO_PORT:-5000}"
STATE_DIR=/var/tmp/online-status
# scripts/services.sh writes the pid of a moto it starts here, per port.
MOTO_PID_FILE="$STATE_DIR/moto-${MOTO_PORT}.pid"

moto_answers() {
    curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:${MOTO_PORT}/moto-api/"
}

# Whether this script starts moto is read off the pid file: services.sh
# writes a new pid only when it starts a server. Comparing before and after
# (rather than trusting the file alone) keeps a moto that an earlier run or
# another shell started, and that is still answering or still importing,
# out of our hands.
moto_was_up=false
if moto_answers; then
    moto_was_up=true
fi
pid_before="$(cat "$MOTO_PID_FILE" 2>/dev/null || true)"
kafka_was_up=false
if bash scripts/kafka.sh status >/dev/null 2>&1; then
    kafka_was_up=true
fi

bash scripts/services.sh

our_moto=""
pid_after="$(cat "$MOTO_PID_FILE" 2>/dev/null || true)"
if ! $moto_was_up && [[ -n "$pid_after" && "$pid_after" != "$pid_before" ]]; then
    our_moto="$pid_after"
fi

our_kafka=false
if ! $kafka_was_up && [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    our_kafka=true
fi

stack_pid=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [[ -n "$stack_pid" ]] && kill -0 "$stack_pid" 2>/dev/null; then
        kill -TERM "$stack_pid" 2>/dev/null || true
        wait "$stack_pid" 2>/dev/null || true
    fi
    # Only the moto this script started, and only while the pid file still
    # names it (nobody has restarted it since).
    if [[ -n "$our_moto" && "$(cat "$MOTO_PID_FILE" 2>/dev/null || true)" == "$our_moto" ]]; then
        echo "up: stopping moto (pid $our_moto), which this script started"
        kill -TERM "$our_moto" 2>/dev/null || true
        rm -f "$MOTO_PID_FILE"
    fi
    if $our_kafka; then
        echo "up: stopping the Kafka broker, which this script started (its data is kept)"
        bash scripts/kafka.sh stop || true
    fi
}
trap cleanup EXIT
# Turn a signal into a normal exit so the EXIT trap runs; the stack gets its
# own SIGTERM from the trap.
trap 'exit 130' INT
trap 'exit 143' TERM

# The stack refuses to start without AWS_ENDPOINT_URL.
source scripts/aws-env.sh

# A target dir outside the clone survives fresh clones, so builds reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/status-target}"
# Built, then run directly rather than through `cargo run`, so Ctrl-C and
# SIGTERM reach the stack itself and it shuts down cleanly.
cargo build --release -p local-stack --bin online-status-local
"$CARGO_TARGET_DIR/release/online-status-local" &
stack_pid=$!
# `wait` returns when a trapped signal arrives too; the EXIT trap then stops
# the stack and waits for it.
status=0
wait "$stack_pid" || status=$?
stack_pid=""
exit "$status"
