#!/usr/bin/env bash
# Builds every function of template.yaml for Lambda with `sam build`
# (BuildMethod rust-cargolambda: a release cross build for arm64 on
# provided.al2023), without docker, then checks what it built.
#
# The tools come pinned from PyPI into a venv of their own, outside the clone:
#   aws-sam-cli   the build itself; rust-cargolambda is a beta feature
#   cargo-lambda  what that build method runs (`cargo lambda build --arm64`)
#   ziglang       the linker and C compiler of the cross build (cargo-lambda
#                 drives it through cargo-zigbuild; librdkafka's C is built too)
# plus rustup's aarch64-unknown-linux-gnu target. A second run reuses all of it.
#
# Each function's bootstrap must then be an aarch64 ELF needing at most
# glibc 2.34 (Lambda's provided.al2023); the script fails otherwise.
#
# Extra arguments go to `sam build`, e.g. `scripts/sam-build.sh StatusApiFunction`.
# From cold it took 26 minutes on two cores beside other builds (README,
# "Building and deploying"); run it under `build-slot` on a shared machine.
#
#   SAM_VENV        the venv (default: one per set of pinned versions, under
#                   /var/tmp/online-status)
#   SAM_TARGET_DIR  cargo's target dir for these builds (default
#                   /var/tmp/status-sam-target): apart from the host builds',
#                   so an arm64 release build never evicts or waits on them
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SAM_CLI_VERSION=1.170.0
CARGO_LAMBDA_VERSION=1.9.2
ZIG_VERSION=0.17.0
# Lambda's provided.al2023 ships glibc 2.34.
MAX_GLIBC=2.34
RUST_TARGET=aarch64-unknown-linux-gnu

venv="${SAM_VENV:-/var/tmp/online-status/sam-${SAM_CLI_VERSION}-cargo-lambda-${CARGO_LAMBDA_VERSION}-zig-${ZIG_VERSION}}"
target_dir="${SAM_TARGET_DIR:-/var/tmp/status-sam-target}"

# The marker is written only after every install succeeded, so a venv left
# half made by an interrupted run is made again rather than trusted.
if [[ ! -f "$venv/.complete" ]]; then
    echo "sam-build: installing aws-sam-cli ${SAM_CLI_VERSION}, cargo-lambda ${CARGO_LAMBDA_VERSION}, ziglang ${ZIG_VERSION} into $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv"; then
        echo "sam-build: python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "aws-sam-cli==${SAM_CLI_VERSION}" \
        "cargo-lambda==${CARGO_LAMBDA_VERSION}" \
        "ziglang==${ZIG_VERSION}"
    touch "$venv/.complete"
fi

if ! rustup target list --installed | grep -qx "$RUST_TARGET"; then
    rustup target add "$RUST_TARGET"
fi

# The venv first: SAM finds cargo-lambda on the PATH, and cargo-lambda finds
# zig as `python3 -m ziglang`, which must be the venv's python3.
export PATH="$venv/bin:$PATH"
export CARGO_TARGET_DIR="$target_dir"
# No usage reports from a build machine.
export SAM_CLI_TELEMETRY=0

echo "sam-build: $(sam --version), $(cargo lambda --version), zig $(python3 -m ziglang version); CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
start=$SECONDS
# samconfig.toml turns on beta features too; saying it here keeps the
# script working with another config file.
sam build --beta-features "$@"
echo "sam-build: sam build took $((SECONDS - start)) s"

# The functions built from Rust, by their resource ids in template.yaml.
mapfile -t functions < <(awk '
    /^  [A-Za-z0-9]+:$/ { name = substr($1, 1, length($1) - 1) }
    /BuildMethod: rust-cargolambda/ { print name }
' template.yaml)
if [[ ${#functions[@]} -eq 0 ]]; then
    echo "sam-build: no rust-cargolambda function found in template.yaml" >&2
    exit 1
fi

failed=0
for fn in "${functions[@]}"; do
    bin=".aws-sam/build/$fn/bootstrap"
    if [[ ! -f "$bin" ]]; then
        # With arguments only the named functions are built.
        if [[ $# -eq 0 ]]; then
            echo "sam-build: $fn: no $bin" >&2
            failed=1
        fi
        continue
    fi
    machine="$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')"
    # The newest glibc symbol version the binary needs; readelf reads an
    # aarch64 ELF on any host (the host's objdump may not).
    glibc="$(readelf -W --version-info "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -n1)"
    size="$(stat -c %s "$bin")"
    echo "sam-build: $fn: $machine, $size bytes, needs glibc ${glibc:-none}"
    if [[ "$machine" != "AArch64" ]]; then
        echo "sam-build: $fn: not an aarch64 binary" >&2
        failed=1
    fi
    if [[ -n "$glibc" && "$(printf '%s\n%s\n' "$glibc" "$MAX_GLIBC" | sort -V | tail -n1)" != "$MAX_GLIBC" ]]; then
        echo "sam-build: $fn: needs glibc $glibc, newer than provided.al2023's $MAX_GLIBC" >&2
        failed=1
    fi
done
exit "$failed"
