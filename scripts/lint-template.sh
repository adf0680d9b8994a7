#!/usr/bin/env bash
# Lints template.yaml twice: as written (cfn-lint runs the SAM transform
# itself), and as the plain CloudFormation that scripts/sam_expand.py expands
# it to, so the resources SAM generates are linted as AWS will see them.
# Both passes must be clean: cfn-lint exits non-zero on any error or warning.
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

expanded="$(mktemp --suffix=.json)"
trap 'rm -f "$expanded"' EXIT

echo "lint: cfn-lint template.yaml"
cfn_lint template.yaml

echo "lint: expanding SAM template"
python3 scripts/sam_expand.py template.yaml "$expanded"

echo "lint: cfn-lint expanded template"
cfn_lint "$expanded"

echo "lint: template clean"
