#!/usr/bin/env bash
# The local Kafka broker, started and stopped in this one place (DESIGN §9):
# noida-db, a single prebuilt binary from PyPI that speaks the Kafka
# protocol, pinned below, listening on 127.0.0.1:${KAFKA_PORT:-9092} and
# keeping its data in $STATE_DIR/kafka across restarts. The stack creates
# the topic itself, with KAFKA_PARTITIONS partitions.
#
#   scripts/kafka.sh start    install if missing, start if not answering (idempotent)
#   scripts/kafka.sh stop     stop the broker this script started (data is kept)
#   scripts/kafka.sh status   say whether it answers
#
# Swapping it out: with KAFKA_BOOTSTRAP_SERVERS set to anything but the local
# default, `start` does nothing and the stack and tests use that Kafka.
# Consumers of this broker use static membership (group.instance.id): a
# consumer that dies without leaving its group otherwise wedges that group
# for over a minute here.
set -euo pipefail

NOIDA_VERSION=0.2.3
KAFKA_PORT="${KAFKA_PORT:-9092}"
STATE_DIR=/var/tmp/online-status
DATA_DIR="$STATE_DIR/kafka-${KAFKA_PORT}"
LOCAL_SERVERS="127.0.0.1:${KAFKA_PORT}"

kafka_up() {
    # Any TCP answer on the port; the stack's first admin call proves the
    # protocol, and says so clearly if something else listens there.
    (exec 3<>"/dev/tcp/127.0.0.1/${KAFKA_PORT}") 2>/dev/null
}

# The binary prints a harmless glibc "weak version" warning on Debian 12;
# only that line is dropped, anything else it says is kept.
noida() {
    noida-db "$@" 2> >(grep -v "weak version" >&2)
}

installed_version() {
    noida-db version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -n1 || true
}

start() {
    if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" && "${KAFKA_BOOTSTRAP_SERVERS}" != "$LOCAL_SERVERS" ]]; then
        echo "kafka    ${KAFKA_BOOTSTRAP_SERVERS} (KAFKA_BOOTSTRAP_SERVERS; no local broker started)"
        return 0
    fi
    mkdir -p "$DATA_DIR"
    if ! kafka_up; then
        if [[ "$(installed_version)" != "$NOIDA_VERSION" ]]; then
            python3 -m pip install --quiet --disable-pip-version-check \
                --root-user-action=ignore "noida-db==${NOIDA_VERSION}"
        fi
        # `up` starts the server in the background and returns.
        noida up --only kafka --host 127.0.0.1 --kafka-port "$KAFKA_PORT" --data-dir "$DATA_DIR" >/dev/null
    fi
    local tries=40
    until kafka_up; do
        tries=$((tries - 1))
        if ((tries <= 0)); then
            echo "kafka: broker did not answer on $LOCAL_SERVERS within 20s (log $DATA_DIR/noida.log)" >&2
            tail -n 20 "$DATA_DIR/noida.log" >&2 || true
            return 1
        fi
        sleep 0.5
    done
    echo "kafka    $LOCAL_SERVERS (noida-db $NOIDA_VERSION; data $DATA_DIR)"
}

stop() {
    if [[ -d "$DATA_DIR" ]] && command -v noida-db >/dev/null; then
        noida down --data-dir "$DATA_DIR" >/dev/null || true
    fi
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
status) if kafka_up; then echo "kafka    $LOCAL_SERVERS answers"; else echo "kafka    $LOCAL_SERVERS down"; exit 1; fi ;;
*)
    echo "usage: scripts/kafka.sh start|stop|status" >&2
    exit 2
    ;;
esac
