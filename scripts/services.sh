#!/usr/bin/env bash
# Ensures the local servers the tests and the local stack need are up and
# answering: Redis, MariaDB, moto (DynamoDB + EventBridge emulator) and the
# Kafka broker (scripts/kafka.sh).
# Idempotent: a server that already answers is left alone, so running this
# twice starts nothing twice. Run it, do not source it: it exports nothing.
set -euo pipefail

MOTO_PORT="${MOTO_PORT:-5000}"
STATE_DIR=/var/tmp/online-status
# Per-port pid and log files, so a MOTO_PORT override never mistakes the
# default port's server for its own.
MOTO_PID_FILE="$STATE_DIR/moto-${MOTO_PORT}.pid"
MOTO_LOG="$STATE_DIR/moto-${MOTO_PORT}.log"
MOTO_URL="http://127.0.0.1:${MOTO_PORT}"

# What the machine must have installed, checked before anything starts, so a
# missing server is named as such rather than as one that did not answer.
bash "$(dirname "${BASH_SOURCE[0]}")/prereqs.sh"

mkdir -p "$STATE_DIR"

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every half second,
# because every server here takes a moment between "started" and "answering".
wait_for() {
    local seconds="$1" what="$2"
    shift 2
    local tries=$((seconds * 2))
    while ! "$@" >/dev/null 2>&1; do
        tries=$((tries - 1))
        if ((tries <= 0)); then
            echo "services: $what did not answer within ${seconds}s" >&2
            return 1
        fi
        sleep 0.5
    done
}

redis_up() {
    [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]
}

# The tests connect over TCP as root with no password, so probe exactly that
# (the socket can answer while TCP networking is still coming up).
mariadb_up() {
    mariadb -uroot -h127.0.0.1 -P3306 --protocol=TCP -e 'select 1'
}

# Any HTTP answer from the moto dashboard means the server is serving.
moto_up() {
    curl -fs -o /dev/null --max-time 2 "$MOTO_URL/moto-api/"
}

# --- Redis -------------------------------------------------------------------
if ! redis_up; then
    # Same command the machine uses at boot: nothing persisted, loopback only.
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for 15 "Redis on 127.0.0.1:6379" redis_up
echo "redis    redis://127.0.0.1:6379"

# --- MariaDB -----------------------------------------------------------------
if ! mariadb_up >/dev/null 2>&1; then
    # --oknodo: a mariadbd that is still starting up is not started twice.
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi
# InnoDB recovery on a cold start can take a while, hence the long wait.
wait_for 60 "MariaDB on 127.0.0.1:3306" mariadb_up
echo "mariadb  mysql://root@127.0.0.1:3306"

# --- moto (DynamoDB + EventBridge) -------------------------------------------
if ! moto_up; then
    # A live pid from an earlier run means moto is still importing: wait for it
    # rather than starting a second one on the same port.
    moto_pid=""
    if [[ -f "$MOTO_PID_FILE" ]]; then
        moto_pid="$(cat "$MOTO_PID_FILE")"
    fi
    if [[ -z "$moto_pid" ]] || ! kill -0 "$moto_pid" 2>/dev/null; then
        if ! python3 -c 'import moto.server' >/dev/null 2>&1; then
            # A fresh machine has no moto; pin the major so its API stays put.
            python3 -m pip install --quiet --disable-pip-version-check \
                --root-user-action=ignore 'moto[server]>=5,<6'
        fi
        # nohup and closed stdio so the server outlives this script and holds
        # no pipe of the caller (CI waits for its output pipes to close).
        # The launcher parses moto's JSONPath expressions once (its doc says
        # why: without it each event a rule forwards costs ~200 ms of CPU).
        nohup python3 "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/moto_server.py" \
            -H 127.0.0.1 -p "$MOTO_PORT" \
            </dev/null >>"$MOTO_LOG" 2>&1 &
        echo "$!" >"$MOTO_PID_FILE"
    fi
fi
# moto imports every service's backend on start; a cold start takes seconds.
if ! wait_for 60 "moto on $MOTO_URL" moto_up; then
    tail -n 20 "$MOTO_LOG" >&2 || true
    exit 1
fi
echo "moto     $MOTO_URL (DynamoDB, EventBridge, SQS; log $MOTO_LOG)"

# --- Kafka (presence.updates) ------------------------------------------------
bash "$(dirname "${BASH_SOURCE[0]}")/kafka.sh" start

# --- The WebSocket client of the README's live-status walkthrough -----------
# scripts/ws.py uses the `websockets` package from PyPI; pin the major.
if ! python3 -c 'import websockets.sync.client' >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check \
        --root-user-action=ignore 'websockets>=14,<18'
fi
