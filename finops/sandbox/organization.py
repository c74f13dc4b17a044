"""The shape of the sandbox's AWS Organization: its member accounts, their scan role, what each holds.

The payer is moto's default account and keeps the seed of `seed.py` unchanged; the organization adds
two member accounts, each with a `FinOpsReadOnly` role trusting the payer and its own resources in
its own regions, so a scan `--org-role FinOpsReadOnly` finds findings in all three accounts while a
scan of the payer alone sees exactly what it saw before.

moto's CreateAccount draws member ids at random: read them from the seed's manifest
(`SeedManifest.organization`), never hard-code them.
"""

from __future__ import annotations

from dataclasses import dataclass

# The role every member account holds for the FinOps scans (`mlp ... --org-role FinOpsReadOnly`).
SCAN_ROLE_NAME = "FinOpsReadOnly"
# What moto's CreateAccount provisions in each member, trusting the payer: the seed's way in.
ACCESS_ROLE_NAME = "OrganizationAccountAccessRole"
# The payer's regions (seed.REGIONS) and one that only members use.
REGIONS: tuple[str, ...] = ("us-east-1", "us-west-2", "eu-west-1")


@dataclass(frozen=True)
class MemberInstance:
    """A GPU instance of a member; `idle_hours` None: busy up to now; `team` None: never tagged."""

    name: str
    region: str
    instance_type: str
    idle_hours: float | None
    team: str | None
    age_hours: float = 30.0


@dataclass(frozen=True)
class MemberVolume:
    region: str
    size_gb: int
    team: str | None


@dataclass(frozen=True)
class MemberBucket:
    """A bucket, named `<name>-<account id>` since bucket names are global across accounts."""

    name: str
    region: str
    team: str | None


@dataclass(frozen=True)
class Member:
    name: str
    email: str
    environment: str
    instances: tuple[MemberInstance, ...]
    volumes: tuple[MemberVolume, ...] = ()
    buckets: tuple[MemberBucket, ...] = ()

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions this member holds resources in, in the organization's order."""
        used = {resource.region for resource in (*self.instances, *self.volumes, *self.buckets)}
        return tuple(region for region in REGIONS if region in used)


MEMBERS: tuple[Member, ...] = (
    Member(
        name="ml-team-a",
        email="ml-team-a@example.com",
        environment="dev",
        instances=(
            MemberInstance("team-a-idle-a10g", "us-east-1", "g5.xlarge", idle_hours=30, team="vision"),
            MemberInstance("team-a-busy-a10g", "us-east-1", "g5.2xlarge", idle_hours=None, team="vision"),
            MemberInstance("team-a-idle-untagged-l4", "eu-west-1", "g6.xlarge", idle_hours=20, team=None),
        ),
        volumes=(MemberVolume("eu-west-1", 200, None),),
        buckets=(MemberBucket("team-a-datasets", "eu-west-1", "vision"),),
    ),
    Member(
        name="ml-team-b",
        email="ml-team-b@example.com",
        environment="prod",
        instances=(
            MemberInstance("team-b-idle-v100", "us-west-2", "p3.2xlarge", idle_hours=26, team="nlp"),
            MemberInstance("team-b-busy-untagged-t4", "us-west-2", "g4dn.xlarge", idle_hours=None, team=None),
            MemberInstance("team-b-busy-a10g", "eu-west-1", "g5.xlarge", idle_hours=None, team="recsys"),
        ),
        volumes=(MemberVolume("us-west-2", 50, "nlp"),),
        buckets=(MemberBucket("team-b-scratch", "us-west-2", None),),
    ),
)
