"""The embedded AWS sandbox: moto's server in this process, Cost Explorer from seeded line items.

with Sandbox() as sandbox:
    manifest = seed_account(sandbox, now=datetime.now(UTC))
    subprocess.run(["mlp", "idle"], env={**os.environ, **sandbox.environ()})
"""

from finops.sandbox.cost_explorer import CostExplorerEmulator, CostExplorerError, LineItem
from finops.sandbox.seed import (
    MemberManifest,
    OrganizationManifest,
    SeededInstance,
    SeededResource,
    SeedManifest,
    seed_account,
)
from finops.sandbox.server import Sandbox

__all__ = [
    "CostExplorerEmulator",
    "CostExplorerError",
    "LineItem",
    "MemberManifest",
    "OrganizationManifest",
    "Sandbox",
    "SeedManifest",
    "SeededInstance",
    "SeededResource",
    "seed_account",
]
