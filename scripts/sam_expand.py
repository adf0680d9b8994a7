#!/usr/bin/env python3
"""Expand the SAM template into the plain CloudFormation that AWS would deploy.

Usage: sam_expand.py TEMPLATE OUTPUT.json

Runs the same translator that the AWS::Serverless transform runs, offline:
no AWS credentials and no network. Two things normally need AWS and are
stubbed here:

- managed policy names are resolved by listing IAM policies; the stub loader
  maps any name to the AWS-managed ARN of that name instead;
- a local `CodeUri` (what `sam build` uploads) is replaced by a placeholder
  S3 URI, as `sam package` would, because the translator accepts only S3.

After expanding, it checks that the idle scanner has exactly one schedule per
shard (inputs {"shard": 0} .. {"shard": SHARDS-1}), since the template lists
the schedules by hand and SHARDS lives in the environment.
"""

import json
import os
import sys

# The translator asks boto3 for a region to pick the partition; any will do.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from cfnlint.decode import decode  # noqa: E402  (cfn-lint's YAML loader knows !Ref and friends)
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader  # noqa: E402
from samtranslator.translator.transform import transform  # noqa: E402

PLACEHOLDER_CODE_URI = "s3://sam-expand-placeholder/code.zip"
SCANNER = "IdleScannerFunction"


class AnyManagedPolicy(dict):
    """Maps every managed policy name to its AWS-managed ARN, without IAM."""

    def __contains__(self, name):
        return isinstance(name, str)

    def __getitem__(self, name):
        return f"arn:aws:iam::aws:policy/{name}"

    def get(self, name, default=None):
        return self[name] if name in self else default


class OfflinePolicyLoader(ManagedPolicyLoader):
    """A ManagedPolicyLoader that never builds an IAM client."""

    def __init__(self):
        super().__init__(iam_client=None)

    def load(self):
        return AnyManagedPolicy()


def stub_local_code_uris(template):
    """Point local CodeUri values at a placeholder S3 object."""
    function_sections = [template.get("Globals", {}).get("Function", {})]
    function_sections += [
        resource.get("Properties", {})
        for resource in template.get("Resources", {}).values()
        if resource.get("Type") == "AWS::Serverless::Function"
    ]
    for properties in function_sections:
        code_uri = properties.get("CodeUri")
        if isinstance(code_uri, str) and not code_uri.startswith("s3://"):
            properties["CodeUri"] = PLACEHOLDER_CODE_URI


def check_scanner_schedules(expanded):
    """Fail unless every shard 0..SHARDS-1 has exactly one schedule."""
    resources = expanded["Resources"]
    scanner = resources.get(SCANNER)
    if scanner is None:
        return []
    variables = scanner["Properties"].get("Environment", {}).get("Variables", {})
    shards = int(variables["SHARDS"])
    # The schedules target the function, or its alias (AutoPublishAlias).
    targets = [{"Fn::GetAtt": [SCANNER, "Arn"]}]
    for name, resource in resources.items():
        if resource["Type"] == "AWS::Lambda::Alias" and resource["Properties"].get("FunctionName") == {"Ref": SCANNER}:
            targets.append({"Ref": name})
    seen = []
    for resource in resources.values():
        if resource["Type"] != "AWS::Scheduler::Schedule":
            continue
        target = resource["Properties"]["Target"]
        if target.get("Arn") not in targets:
            continue
        seen.append(json.loads(target["Input"])["shard"])
    if sorted(seen) != list(range(shards)):
        return [f"{SCANNER}: SHARDS={shards} but schedules cover shards {sorted(seen)}"]
    return []


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    source, output = sys.argv[1], sys.argv[2]
    template, matches = decode(source)
    if matches:
        sys.exit("\n".join(str(match) for match in matches))
    stub_local_code_uris(template)
    expanded = transform(template, {}, OfflinePolicyLoader())
    problems = check_scanner_schedules(expanded)
    if problems:
        sys.exit("\n".join(problems))
    with open(output, "w", encoding="utf-8") as out:
        json.dump(expanded, out, indent=1, sort_keys=False)
        out.write("\n")


if __name__ == "__main__":
    main()
