#!/usr/bin/env bash
# Fuzzes the HTTP API against openapi.yaml with schemathesis (DESIGN §7,
# §7.1): starts a local stack of its own, runs schemathesis at it twice,
# first as a service caller (no header), then as end user 42
# (`X-Local-User: 42`, DESIGN §9, with the path's user id held at 42 so the
# writes are the user's own), and stops the stack.
#
# Fails on any 5xx, any status code, header, content type or body that
# openapi.yaml does not describe for the route, and on the stack dying or
# panicking during the run. scripts/test.sh runs it after the Rust tests; it
# runs alone as `bash scripts/api-fuzz.sh` (it starts the local servers it
# needs and builds the stack if it is not built).
#
# The stack gets free ports (never 3000/3001/3002, where scripts/up.sh's
# stack may be serving), its own database, Redis key prefix, DynamoDB tables
# and bus, and no Kafka poller; all of them are removed when the run ends.
#
# Bounds, all overridable from the environment:
#   FUZZ_MAX_EXAMPLES  test cases per operation and phase (default 50)
#   FUZZ_SERVICE_S     seconds for the service caller's pass (default 90)
#   FUZZ_END_USER_S    seconds for the end user's pass (default 45)
#   FUZZ_SEED          schemathesis seed, to repeat a run that failed
#                      (each pass prints the seed it used)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

SCHEMATHESIS_VERSION=4.32.5
STATE_DIR=/var/tmp/online-status
# Outside the clone, like the target dir: a fresh clone (CI) reuses it.
VENV="$STATE_DIR/schemathesis-$SCHEMATHESIS_VERSION"
# schemathesis and Hypothesis keep their example databases in the working
# directory; running from here keeps them out of the clone, and lets a
# failure found once be tried first on the next run.
WORK_DIR="$STATE_DIR/api-fuzz"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-50}"
SERVICE_S="${FUZZ_SERVICE_S:-90}"
END_USER_S="${FUZZ_END_USER_S:-45}"
# Every response is checked against the route's documented answers.
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
# The service pass also sends data the spec forbids and fails if any is
# accepted; the end-user pass cannot, since it pins the path's id to the
# caller's own.
SERVICE_CHECKS="$CHECKS,negative_data_rejection"
START_TIMEOUT_S=90

say() { echo "api-fuzz: $*"; }

mkdir -p "$STATE_DIR" "$WORK_DIR"

# --- schemathesis ------------------------------------------------------------
# In a virtualenv of its own, so its dependencies never meet moto's.
if [[ "$("$VENV/bin/st" --version 2>/dev/null || true)" != *"$SCHEMATHESIS_VERSION"* ]]; then
    say "installing schemathesis $SCHEMATHESIS_VERSION in $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    timeout 600 "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# --- the stack ---------------------------------------------------------------
bash scripts/services.sh >/dev/null
source scripts/aws-env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/status-target}"
# The dev profile, which `cargo test` (tests/integration/e2e.rs) has built
# already when scripts/test.sh calls this: then it is a no-op.
cargo build --quiet -p local-stack --bin online-status-local
STACK_BIN="$CARGO_TARGET_DIR/debug/online-status-local"

tag="$(date +%s)$$"
DATABASE="status_fuzz_$tag"
KEY_PREFIX="fuzz$tag:"
REPAIR_TABLE="status-fuzz-repair-$tag"
DEAD_LETTER_TABLE="status-fuzz-dead-letters-$tag"
BUS="status-fuzz-events-$tag"

RUN_DIR="$(mktemp -d)"
STACK_OUT="$RUN_DIR/stack.out"
STACK_ERR="$RUN_DIR/stack.err"
stack_pid=""
# Made here so they exist before the stack's shell opens them.
: >"$STACK_OUT"
: >"$STACK_ERR"

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [[ -n "$stack_pid" ]] && kill -0 "$stack_pid" 2>/dev/null; then
        kill -TERM "$stack_pid" 2>/dev/null || true
        for _ in $(seq 20); do
            kill -0 "$stack_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$stack_pid" 2>/dev/null || true
        wait "$stack_pid" 2>/dev/null || true
    fi
    mariadb -uroot -h127.0.0.1 -P3306 --protocol=TCP -e "DROP DATABASE IF EXISTS \`$DATABASE\`" 2>/dev/null || true
    redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "${KEY_PREFIX}*" 2>/dev/null |
        xargs -r -d '\n' redis-cli -h 127.0.0.1 -p 6379 del >/dev/null 2>&1 || true
    # moto keeps everything in memory, so this only tidies a long-lived one.
    if command -v aws >/dev/null 2>&1; then
        for table in "$REPAIR_TABLE" "$DEAD_LETTER_TABLE"; do
            aws dynamodb delete-table --table-name "$table" >/dev/null 2>&1 || true
        done
        aws events delete-event-bus --name "$BUS" >/dev/null 2>&1 || true
    fi
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Port 0: the system picks free ports and the banner names them. The scanner
# runs every 5 s so its writes interleave with the requests; a poll window
# of 1 s lets the end user's reads through often enough to test their
# answers, and still answers most of them 429.
env REDIS_URL=redis://127.0.0.1:6379 \
    DATABASE_URL="mysql://root@127.0.0.1:3306/$DATABASE" \
    KEY_PREFIX="$KEY_PREFIX" \
    REPAIR_TABLE="$REPAIR_TABLE" \
    DEAD_LETTER_TABLE="$DEAD_LETTER_TABLE" \
    STATUS_EVENT_BUS="$BUS" \
    LOCAL_EVENTS_QUEUE= \
    LOCAL_SCAN_INTERVAL_S=5 \
    POLL_WINDOW_S=1 \
    LOCAL_API_PORT=0 \
    LOCAL_INVOKE_PORT=0 \
    LOCAL_WS_PORT=0 \
    KAFKA_BOOTSTRAP_SERVERS=off \
    RUST_LOG="${RUST_LOG:-info}" \
    "$STACK_BIN" </dev/null >"$STACK_OUT" 2>"$STACK_ERR" &
stack_pid=$!

stack_log_tail() {
    echo "--- last lines the stack logged ($STACK_BIN) ---"
    tail -n 40 "$STACK_ERR" || true
    echo "---"
}

# The banner is printed once every resource is ready and the ports are bound.
api_url=""
for _ in $(seq $((START_TIMEOUT_S * 2))); do
    api_url="$(sed -n 's/^ *HTTP API *\(http:[^ ]*\).*/\1/p' "$STACK_OUT" | head -n 1)"
    [[ -n "$api_url" ]] && break
    if ! kill -0 "$stack_pid" 2>/dev/null; then
        say "FAILED: the local stack exited before serving"
        stack_log_tail
        exit 1
    fi
    sleep 0.5
done
if [[ -z "$api_url" ]]; then
    say "FAILED: the local stack printed no URL within ${START_TIMEOUT_S}s"
    stack_log_tail
    exit 1
fi
say "stack up at $api_url (pid $stack_pid, database $DATABASE, key prefix $KEY_PREFIX)"

# --- the passes --------------------------------------------------------------
# Colour only for a person at a terminal; logs (CI) get plain text.
color=()
[[ -t 1 ]] || color=(--no-color)

# run_pass NAME SECONDS CHECKS [ST_GLOBAL_OPTION...]: one schemathesis run;
# returns its exit code.
run_pass() {
    local name="$1" seconds="$2" checks="$3"
    shift 3
    local args=(run "$ROOT/openapi.yaml" --url "$api_url" --checks "$checks"
        --max-examples "$MAX_EXAMPLES" --max-time "$seconds" --request-timeout 10
        --generation-with-security-parameters false "${color[@]}")
    [[ -n "${FUZZ_SEED:-}" ]] && args+=(--seed "$FUZZ_SEED")
    say "pass '$name': schemathesis for at most ${seconds}s, $MAX_EXAMPLES cases per operation and phase"
    local status=0
    # The outer limit only guards against a hung run; --max-time ends it.
    (cd "$WORK_DIR" && timeout $((seconds + 120)) "$VENV/bin/st" "$@" "${args[@]}") || status=$?
    return "$status"
}

# The end user is 42 and asks about 42, so the writes are their own and the
# reads show them their own truth; someone else's id would only ever get
# 403. Their status reads are rate limited (one per POLL_WINDOW_S), so most
# answer 429, which openapi.yaml documents and schemathesis checks too.
END_USER_CONFIG="$RUN_DIR/end-user.toml"
cat >"$END_USER_CONFIG" <<'EOF'
headers = { "X-Local-User" = "42" }
parameters = { "path.user_id" = "42" }
EOF

# A body over the API's 64 KiB limit is refused 413 before it is read
# (openapi.yaml documents it), which schemathesis's own list of rejecting
# statuses leaves out: it would count that refusal as "accepted".
SERVICE_CONFIG="$RUN_DIR/service.toml"
cat >"$SERVICE_CONFIG" <<'EOF'
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
EOF

reasons=()
passed=0
failed=0
# stack_alive NAME: whether the stack is still up and has not panicked; says
# why not, with its last log lines.
stack_alive() {
    local name="$1"
    if ! kill -0 "$stack_pid" 2>/dev/null; then
        reasons+=("the stack died during the $name pass")
        stack_log_tail
        return 1
    fi
    # A panic in a request's task leaves the process up; it is a bug all the same.
    if grep -q "panicked at" "$STACK_ERR"; then
        reasons+=("the stack panicked during the $name pass")
        grep -A 5 "panicked at" "$STACK_ERR" | head -n 40
        return 1
    fi
}

started=$SECONDS
for pass in service end-user; do
    status=0
    case "$pass" in
        service) run_pass service "$SERVICE_S" "$SERVICE_CHECKS" --config-file "$SERVICE_CONFIG" || status=$? ;;
        end-user) run_pass end-user "$END_USER_S" "$CHECKS" --config-file "$END_USER_CONFIG" || status=$? ;;
    esac
    ok=true
    if ((status != 0)); then
        reasons+=("the $pass pass found failures (schemathesis exit $status; each case and a curl command for it are above)")
        ok=false
    fi
    alive=true
    stack_alive "$pass" || alive=false
    if $ok && $alive; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
    # A dead or broken stack would only fail the next pass for the same reason.
    $alive || break
done

# Errors the stack logged without failing a request (a background write, a
# publish) are shown for a person to judge; they fail nothing by themselves.
if grep -q " ERROR " "$STACK_ERR"; then
    say "the stack logged errors (first 20 shown):"
    grep " ERROR " "$STACK_ERR" | head -n 20
fi

echo
for reason in "${reasons[@]}"; do
    say "FAILED: $reason"
done
if ((failed > 0)); then
    say "repeat a pass with FUZZ_SEED=<the seed it printed> bash scripts/api-fuzz.sh"
fi
say "$passed passed, $failed failed ($((SECONDS - started)) s)"
((failed == 0))
