# syntax=docker/dockerfile:1.7
# The FinOps jobs' image: the serving cluster's CronJobs run `mlp report` (nightly) and
# `mlp reap --apply` (hourly) from it. See docs/finops-image.md for the build, the push and how the
# pushed digest reaches the stack config.
#
# The base image is pinned by digest. The digest below is a PLACEHOLDER (all zeros, so no registry
# has it and a build without the real one fails at FROM): CI passes the real one with
#   --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11-slim@sha256:0000000000000000000000000000000000000000000000000000000000000000

FROM ${PYTHON_IMAGE} AS builder
# The Pulumi CLI, for the reaper's stack destroys (Automation API). Its checksum is a PLACEHOLDER as
# well: CI passes the one from the release's pulumi-<version>-checksums.txt, and sha256sum refuses
# the download otherwise.
ARG PULUMI_VERSION=3.200.0
ARG PULUMI_SHA256=0000000000000000000000000000000000000000000000000000000000000000
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# curl downloads the Pulumi CLI; only this stage has it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN curl --fail --silent --show-error --location --proto '=https' --tlsv1.2 \
        --output /tmp/pulumi.tar.gz \
        "https://get.pulumi.com/releases/sdk/pulumi-v${PULUMI_VERSION}-linux-x64.tar.gz" \
    && echo "${PULUMI_SHA256}  /tmp/pulumi.tar.gz" | sha256sum --check --strict \
    && mkdir -p /opt/pulumi \
    && tar --extract --gzip --file /tmp/pulumi.tar.gz --directory /opt/pulumi --strip-components=1 \
    && rm /tmp/pulumi.tar.gz \
    && /opt/pulumi/pulumi version
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mlp ./mlp
COPY finops ./finops
COPY infra ./infra
COPY policy ./policy
# The wheel of this repository, then a venv holding it and its runtime dependencies (no dev extras).
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /wheels/ml_platform-*.whl \
    && /opt/venv/bin/mlp --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ml-platform FinOps jobs" \
      org.opencontainers.image.description="mlp report and mlp reap for the serving cluster's CronJobs" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, unprivileged UID/GID: the pod's securityContext (runAsUser/runAsGroup/fsGroup 10001) matches it.
RUN groupadd --system --gid 10001 mlp \
    && useradd --system --uid 10001 --gid 10001 --home-dir /scratch --no-create-home \
        --shell /usr/sbin/nologin mlp
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/pulumi /opt/pulumi
# The root filesystem is read-only in the pod; its only writable place is the emptyDir at /scratch,
# so everything that writes (Pulumi's ~/.pulumi, the Cost Explorer cache, temp files) goes there.
ENV PATH=/opt/venv/bin:/opt/pulumi:/usr/local/bin:/usr/bin:/bin \
    HOME=/scratch \
    TMPDIR=/scratch \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PULUMI_SKIP_UPDATE_CHECK=true
WORKDIR /scratch
USER 10001:10001
# A batch job has nothing to probe: it runs, exits and is judged by its exit code and the
# JobSucceeded heartbeat alarm (Kubernetes ignores Docker health checks anyway).
HEALTHCHECK NONE
ENTRYPOINT ["mlp"]
CMD ["--help"]
