#!/usr/bin/env python3
"""Check that the idle scanner has exactly one schedule per shard.

Usage: check_schedules.py TEMPLATE

The template lists the scanner's schedules by hand (inputs {"shard": 0} ..
{"shard": SHARDS-1}) while SHARDS lives in the functions' environment, so
nothing else notices a shard left without a schedule. cfn-lint (run before
this) lints the template and the resources the SAM transform makes of it.
"""

import json
import sys

from cfnlint.decode import decode  # cfn-lint's YAML loader knows !Ref and friends

SCANNER = "IdleScannerFunction"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    template, matches = decode(sys.argv[1])
    if matches:
        sys.exit("\n".join(str(match) for match in matches))
    scanner = template["Resources"][SCANNER]["Properties"]
    variables = dict(template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    variables.update(scanner.get("Environment", {}).get("Variables", {}))
    shards = int(variables["SHARDS"])
    seen = sorted(
        json.loads(event["Properties"]["Input"])["shard"]
        for event in scanner.get("Events", {}).values()
        if event.get("Type") == "ScheduleV2"
    )
    if seen != list(range(shards)):
        sys.exit(f"{SCANNER}: SHARDS={shards} but schedules cover shards {seen}")


if __name__ == "__main__":
    main()
