#!/usr/bin/env bash
# Checks, before anything starts or builds, that this machine has what the
# scripts do not install themselves, and names everything missing in one
# line with the package that brings it (Debian's names). What the scripts
# do install (moto, the Kafka broker; scripts/sam-build.sh its own tools) is not checked here.
#
#   Rust     cargo and rustc, at least the workspace's rust-version
#   C        gcc and make (librdkafka and a few -sys crates build from source)
#   Python   python3 with pip (moto and the Kafka broker come from PyPI)
#   curl     the scripts' probes of moto
#   Redis    redis-cli always; redis-server unless a Redis already answers
#   MariaDB  the mariadb client always; mariadbd unless one already answers
#
# A server that is installed but not running is no error: scripts/services.sh
# starts it. Called first by scripts/up.sh and scripts/services.sh (and so by
# scripts/test.sh); runs alone too. Prints nothing when all is there.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()

has() { command -v "$1" >/dev/null 2>&1; }

# The workspace's minimum, read from Cargo.toml so it has one home.
need_rust="$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n1)"
if ! has cargo || ! has rustc; then
    missing+=("Rust ${need_rust}+ (cargo and rustc; rustup toolchain install stable)")
else
    have_rust="$(rustc --version | awk '{print $2}')"
    # sort -V puts the smaller version first: if that is not the minimum,
    # the toolchain is older than it.
    if [[ -n "$need_rust" && "$(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -n1)" != "$need_rust" ]]; then
        missing+=("Rust ${need_rust}+ (found ${have_rust}; rustup update stable)")
    fi
fi

has gcc || missing+=("gcc (apt-get install gcc)")
has make || missing+=("make (apt-get install make)")
has curl || missing+=("curl (apt-get install curl)")

if ! has python3; then
    missing+=("Python 3 with pip (apt-get install python3 python3-pip)")
elif ! python3 -m pip --version >/dev/null 2>&1; then
    missing+=("pip for python3 (apt-get install python3-pip)")
fi

if ! has redis-cli; then
    missing+=("redis-cli (apt-get install redis-tools)")
fi
# The server binary matters only when no Redis answers: services.sh starts
# an installed one, and leaves one that runs elsewhere alone.
if ! [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]] && ! has redis-server; then
    missing+=("Redis server (apt-get install redis-server)")
fi

if ! has mariadb; then
    missing+=("mariadb client (apt-get install mariadb-client)")
fi
# services.sh starts exactly this binary when nothing answers on 3306.
if has mariadb && ! mariadb -uroot -h127.0.0.1 -P3306 --protocol=TCP -e 'select 1' >/dev/null 2>&1; then
    if (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; then
        # Something listens but refuses the login every script and test uses
        # (Debian's own default lets root in through the socket alone).
        missing+=("MariaDB on 127.0.0.1:3306 refuses root without a password over TCP (allow it, as the tests connect that way)")
    elif ! [[ -x /usr/sbin/mariadbd ]]; then
        missing+=("MariaDB server (apt-get install mariadb-server)")
    fi
fi

if ((${#missing[@]} > 0)); then
    joined="$(printf '%s; ' "${missing[@]}")"
    echo "prerequisites missing: ${joined%; }" >&2
    exit 1
fi
