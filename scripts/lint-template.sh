#!/usr/bin/env bash
# Lints template.yaml with cfn-lint, which runs the SAM transform itself and
# lints the resources SAM generates as AWS will see them (a bad value set in
# Globals is reported on the generated AWS::Lambda::Function), then checks
# that every shard has its schedule. cfn-lint exits non-zero on any error or
# warning.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# A fresh machine may lack either tool; pin majors so rules do not drift
# under us between runs.
if ! python3 -c 'import cfnlint, samtranslator' >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check \
        --root-user-action=ignore 'cfn-lint>=1,<2' 'aws-sam-translator>=1.90,<2'
fi

# Call cfn-lint through python3 rather than its console script: right after
# a pip install, pyenv's shim for the script may not exist yet.
cfn_lint() {
    python3 -c 'import sys; from cfnlint.runner import main; sys.exit(main())' "$@"
}

# The translator needs a region only to pick the partition; none is deployed.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

echo "lint: cfn-lint template.yaml"
cfn_lint template.yaml

echo "lint: one schedule per shard"
python3 scripts/check_schedules.py template.yaml

echo "lint: template clean"
