"""Rule 4: S3 buckets are encrypted, fully blocked from public access, never granted publicly, and
checkpoint buckets are versioned.

Since pulumi-aws v7 these settings are separate resources pointing at the bucket (`bucket` input),
so the bucket checks are stack-level: a bucket passes when a resource that references it configures
the setting (or the deprecated inline argument does). A bucket is a checkpoint bucket when its
logical name, physical name or parent component mentions "checkpoint".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pulumi_policy import Severity

from policy.analyzer_view import display, is_true, items_of, lookup
from policy.rules.common import Resource, Rule, referenced, violation

BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
SSE_TYPES = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
VERSIONING_TYPES = (
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:s3/bucketVersioningV2:BucketVersioningV2",
)
ACL_TYPES = ("aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketAclV2:BucketAclV2")
PUBLIC_ACCESS_BLOCK_TYPE = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
PUBLIC_ACCESS_BLOCKS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
PUBLIC_CANNED_ACLS = ("public-read", "public-read-write", "authenticated-read")
PUBLIC_GRANTEE_URIS = (
    "http://acs.amazonaws.com/groups/global/AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
)


def is_checkpoint_bucket(bucket: Resource) -> bool:
    physical = lookup(bucket.props, "bucket", default="") or lookup(bucket.props, "bucketPrefix", default="")
    component = bucket.urn.split("::")[-2] if bucket.urn.count("::") >= 3 else ""
    return any("checkpoint" in str(text).lower() for text in (bucket.name, physical, component))


def _sse_algorithms(rules: object) -> list[str]:
    return [
        str(lookup(rule, "applyServerSideEncryptionByDefault", "sseAlgorithm", default=""))
        for rule in items_of(rules) or ([rules] if rules else [])
    ]


def _bucket_findings(bucket: Resource, resources: Sequence[Resource]) -> Iterator[str]:
    def pointing_here(types: tuple[str, ...]) -> list[Resource]:
        return [r for r in resources if r.type in types and bucket in referenced(r, "bucket", [bucket])]

    inline_sse = _sse_algorithms(lookup(bucket.props, "serverSideEncryptionConfiguration", "rule"))
    linked_sse = [
        alg for sse in pointing_here(SSE_TYPES) for alg in _sse_algorithms(lookup(sse.props, "rules"))
    ]
    if not any(inline_sse + linked_sse):
        yield violation(
            bucket,
            "server-side encryption",
            "not configured",
            "add an aws.s3.BucketServerSideEncryptionConfiguration for it (SSE-KMS with a customer key)",
        )

    blocks = pointing_here((PUBLIC_ACCESS_BLOCK_TYPE,))
    if not blocks:
        yield violation(
            bucket,
            "public access block",
            "not configured",
            f"add an aws.s3.BucketPublicAccessBlock for it with {', '.join(PUBLIC_ACCESS_BLOCKS)} all true",
        )
    for block in blocks:
        off = [flag for flag in PUBLIC_ACCESS_BLOCKS if not is_true(lookup(block.props, flag))]
        if off:
            yield violation(
                bucket,
                f"public access block '{block.name}'",
                f"missing {', '.join(off)}",
                f"set {', '.join(PUBLIC_ACCESS_BLOCKS)} all true",
            )

    if is_checkpoint_bucket(bucket):
        inline = lookup(bucket.props, "versioning", "enabled")
        statuses = [
            lookup(versioning.props, "versioningConfiguration", "status")
            for versioning in pointing_here(VERSIONING_TYPES)
        ]
        if not is_true(inline) and "Enabled" not in statuses:
            yield violation(
                bucket,
                "versioning",
                display(statuses[0]) if statuses else "not enabled",
                "checkpoint buckets keep every version: add an aws.s3.BucketVersioning with status Enabled",
            )


def check_bucket_security(resources: Sequence[Resource], _config: None) -> Iterator[tuple[str | None, str]]:
    for bucket in (r for r in resources if r.type in BUCKET_TYPES):
        for message in _bucket_findings(bucket, resources):
            yield bucket.urn, message


def _public_grants(grants: object) -> list[str]:
    found = []
    for grant in items_of(grants):
        uri = lookup(grant, "grantee", "uri") or lookup(grant, "uri")
        if uri in PUBLIC_GRANTEE_URIS:
            found.append(
                f"{lookup(grant, 'permission') or lookup(grant, 'permissions')} to {uri.rsplit('/', 1)[-1]}"
            )
    return found


def check_no_public_acl(resource: Resource, _config: None) -> Iterator[str]:
    if resource.type not in BUCKET_TYPES + ACL_TYPES:
        return
    acl = lookup(resource.props, "acl")
    if acl in PUBLIC_CANNED_ACLS:
        yield violation(resource, "acl", display(acl), "use private (or no ACL) and grant access through IAM")
    grants = lookup(resource.props, "accessControlPolicy", "grants") or lookup(resource.props, "grants")
    public = _public_grants(grants)
    if public:
        yield violation(
            resource,
            "grants",
            ", ".join(public),
            "remove grants to AllUsers/AuthenticatedUsers and grant access through IAM",
        )


BUCKET_RULE = Rule(
    name="s3-bucket-security",
    description="S3 buckets have SSE, all four public-access blocks, and checkpoint buckets are versioned.",
    severity=Severity.HIGH,
    check=check_bucket_security,
    stack_level=True,
)

ACL_RULE = Rule(
    name="s3-no-public-acl",
    description="No S3 bucket or bucket ACL grants access to everyone or to any authenticated AWS user.",
    severity=Severity.CRITICAL,
    check=check_no_public_acl,
)
