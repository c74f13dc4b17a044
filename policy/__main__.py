"""What Pulumi runs for `pulumi preview --policy-pack policy`: builds the pack, which then serves forever.

The rules live in importable modules (`policy.rules`, listed by `policy.pack`); tests import those,
never this file, because the `PolicyPack` constructor starts the analyzer's gRPC server and blocks.
"""

import sys
from pathlib import Path

# Pulumi starts the pack with policy/ as its working directory; the rules import the project's packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.pack import PACK_NAME, rules

PolicyPack(
    name=PACK_NAME,
    policies=[rule.policy() for rule in rules()],
    enforcement_level=EnforcementLevel.MANDATORY,
)
