"""moto's server on a free 127.0.0.1 port, in this process, with Cost Explorer answered by the sandbox.

The server runs in a thread of the calling process so the seed can reach moto's in-process backends
for what the AWS API cannot do (backdating launch and termination times, S3 objects' LastModified).
Those backends are process-global: do not run `moto.mock_aws` in the same process while a Sandbox is
up, it resets them.

moto draws its ids (instances, volumes, member accounts, ARNs' suffixes) from one seedable random:
every reset reseeds it, so the same seed calls make the same ids. It records no scaling activities,
so DescribeScalingActivities is answered from the ones the seed records (`record_scaling_activity`).
"""

from __future__ import annotations

import importlib
import io
import json
import re
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape as xml_escape

import boto3
import requests
from botocore.config import Config
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.base_backend import BackendDict, backend_lock
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason
from moto.iam.models import get_account_id_from
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.s3.models import s3_backends
from werkzeug.serving import BaseWSGIServer, make_server

from finops.sandbox import metric_index
from finops.sandbox.cost_explorer import TARGET_PREFIX, CostExplorerEmulator, CostExplorerError

ACCOUNT_ID = DEFAULT_ACCOUNT_ID
DEFAULT_REGION = "us-east-1"
ACCESS_KEY_ID = "sandbox"
SECRET_ACCESS_KEY = "sandbox"
# moto's random after every reset: the same calls draw the same ids.
MOTO_SEED = 20261123
# The services the seed calls. Their moto modules are imported before the first reseed: some draw
# from moto's random when imported (EKS's), which would shift the first seed of a process alone.
SEEDED_SERVICES = (
    "autoscaling",
    "budgets",
    "cloudwatch",
    "ec2",
    "eks",
    "elasticache",
    "elb",
    "elbv2",
    "events",
    "iam",
    "organizations",
    "s3",
    "sqs",
    "sts",
)
AUTOSCALING_XMLNS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
# SigV4's credential scope: <access key>/<date>/<region>/<service>/aws4_request.
CREDENTIAL_SCOPE = re.compile(r"Credential=([^/]+)/[0-9]{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class CostExplorerMiddleware:
    """Routes `X-Amz-Target: AWSInsightsIndexService.*` to the emulator and everything else to moto."""

    def __init__(self, moto_app: WsgiApp, emulator: CostExplorerEmulator) -> None:
        self.moto_app = moto_app
        self.emulator = emulator

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith(TARGET_PREFIX):
            return self.moto_app(environ, start_response)
        operation = target[len(TARGET_PREFIX) :]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        try:
            request = json.loads(body or b"{}")
            status, answer = "200 OK", self.emulator.handle(operation, request)
        except json.JSONDecodeError:
            status, answer = (
                "400 Bad Request",
                {"__type": "SerializationException", "message": "body is not JSON"},
            )
        except CostExplorerError as exc:
            status, answer = "400 Bad Request", {"__type": exc.code, "message": exc.message}
        payload = json.dumps(answer).encode()
        start_response(
            status,
            [
                ("Content-Type", "application/x-amz-json-1.1"),
                ("Content-Length", str(len(payload))),
                ("x-amzn-RequestId", str(uuid.uuid4())),
            ],
        )
        return [payload]


class ScalingActivities:
    """The scaling activities of the sandbox's groups, per account and region, as the seed records them."""

    def __init__(self) -> None:
        self._activities: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def record(self, account_id: str, region: str, activity: Mapping[str, Any]) -> None:
        key = (account_id, region, activity["AutoScalingGroupName"])
        with self._lock:
            self._activities.setdefault(key, []).append(dict(activity))

    def clear(self) -> None:
        with self._lock:
            self._activities.clear()

    def answer(self, account_id: str, region: str, group: str) -> bytes:
        """DescribeScalingActivities' XML: the group's activities newest first, as AWS lists them, one page."""
        with self._lock:
            activities = sorted(
                self._activities.get((account_id, region, group), []),
                key=lambda activity: activity["StartTime"],
                reverse=True,
            )
        members = "".join(
            "<member>"
            + "".join(f"<{name}>{_xml_value(value)}</{name}>" for name, value in activity.items())
            + "</member>"
            for activity in activities
        )
        return (
            f'<DescribeScalingActivitiesResponse xmlns="{AUTOSCALING_XMLNS}">'
            f"<DescribeScalingActivitiesResult><Activities>{members}</Activities></DescribeScalingActivitiesResult>"
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</DescribeScalingActivitiesResponse>"
        ).encode()


def _xml_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return xml_escape(str(value))


class ScalingActivitiesMiddleware:
    """Answers EC2 Auto Scaling's DescribeScalingActivities from `ScalingActivities`; the rest goes on."""

    def __init__(self, app: WsgiApp, activities: ScalingActivities) -> None:
        self.app = app
        self.activities = activities

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        scope = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        if scope is None or scope.group(3) != "autoscaling":
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        form = {name: values[0] for name, values in parse_qs(body.decode()).items()}
        if form.get("Action") != "DescribeScalingActivities":
            environ["wsgi.input"] = io.BytesIO(body)
            return self.app(environ, start_response)
        access_key, region = scope.group(1), scope.group(2)
        payload = self.activities.answer(
            get_account_id_from(access_key), region, form.get("AutoScalingGroupName", "")
        )
        start_response("200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(payload)))])
        return [payload]


class _QuietRequestHandler(MotoRequestHandler):
    """No access log: the sandbox serves thousands of requests behind a CLI whose stderr people read."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class Sandbox:
    """An emulated AWS account over HTTP: `with Sandbox() as sandbox: ...`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, page_size: int | None = None) -> None:
        self.host = host
        self.port = port
        self.cost_explorer = CostExplorerEmulator()
        self.scaling_activities = ScalingActivities()
        if page_size is not None:
            self.cost_explorer.page_size = page_size
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        # One session for every client: a fresh session re-reads each service's model (~0.3 s a client).
        # Sessions are not thread-safe, so clients are created one at a time.
        self._client_session = boto3.session.Session()
        self._client_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not running; use `with Sandbox() as sandbox:`")
        return f"http://{self.host}:{self._server.server_port}"

    @property
    def account_id(self) -> str:
        return ACCOUNT_ID

    def environ(self) -> dict[str, str]:
        """The environment that points boto3 (and so `mlp`) at this sandbox."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": DEFAULT_REGION,
            "AWS_REGION": DEFAULT_REGION,
        }

    def start(self) -> Sandbox:
        app = ScalingActivitiesMiddleware(
            CostExplorerMiddleware(DomainDispatcherApplication(create_backend_app), self.cost_explorer),
            self.scaling_activities,
        )
        self._server = make_server(
            self.host, self.port, app, threaded=True, request_handler=_QuietRequestHandler
        )
        metric_index.install()
        for service in SEEDED_SERVICES:
            importlib.import_module(f"moto.{service}.models")
        self._thread = threading.Thread(target=self._server.serve_forever, name="mlp-sandbox", daemon=True)
        self._thread.start()
        # moto's backends are process-wide: start from an empty account whatever ran before.
        self.reset()
        return self

    def reset(self, seed: int = MOTO_SEED) -> None:
        """Empty the account (every moto resource, scaling activity and Cost Explorer line item) and
        reseed moto's random with `seed`."""
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=60).raise_for_status()
        _drop_backends_made_by_reset()
        requests.post(f"{self.endpoint}/moto-api/seed", params={"a": seed}, timeout=60).raise_for_status()
        self.scaling_activities.clear()
        self.cost_explorer.load([], datetime.now(UTC))

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None
        metric_index.uninstall()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def client(
        self,
        service: str,
        region: str = DEFAULT_REGION,
        *,
        max_attempts: int = 3,
        credentials: Mapping[str, Any] | None = None,
    ) -> Any:
        """A boto3 client for this sandbox whatever the process environment says (used by the seed).

        `credentials` (STS AssumeRole's `Credentials`) make moto act in the role's account; by
        default the client acts in the payer account.
        """
        with self._client_lock:
            return self._client_session.client(
                service,
                region_name=region,
                endpoint_url=self.endpoint,
                aws_access_key_id=credentials["AccessKeyId"] if credentials else ACCESS_KEY_ID,
                aws_secret_access_key=credentials["SecretAccessKey"] if credentials else SECRET_ACCESS_KEY,
                aws_session_token=credentials["SessionToken"] if credentials else None,
                config=Config(
                    retries={"mode": "standard", "total_max_attempts": max_attempts}, max_pool_connections=20
                ),
            )

    def backdate_launch(
        self, region: str, instance_id: str, launched_at: datetime, account_id: str = ACCOUNT_ID
    ) -> None:
        """Set an instance's launch time, which the EC2 API only ever sets to "now"."""
        instance = ec2_backends[account_id][region].get_instance(instance_id)
        instance.launch_time = _naive(launched_at)

    def backdate_state_change(
        self,
        region: str,
        instance_id: str,
        ended_at: datetime,
        account_id: str = ACCOUNT_ID,
        *,
        spot_interruption: bool = False,
    ) -> None:
        """Set when a stopped or terminated instance stopped running (its StateTransitionReason) and,
        for a spot interruption, the state reason EC2 gives a reclaimed instance."""
        instance = ec2_backends[account_id][region].get_instance(instance_id)
        moment = ended_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        if spot_interruption:
            instance._reason = f"Service initiated ({moment} GMT)"
            instance.state_reason = StateReason(
                "Server.SpotInstanceTermination: Spot instance termination", "Server.SpotInstanceTermination"
            )
        else:
            instance._reason = f"User initiated ({moment} GMT)"

    def backdate_object(
        self, bucket: str, key: str, modified_at: datetime, account_id: str = ACCOUNT_ID
    ) -> None:
        """Set an S3 object's LastModified, which S3 only ever sets to "now"."""
        s3_backends[account_id]["aws"].get_object(bucket, key).last_modified = _naive(modified_at)

    def record_scaling_activity(
        self, region: str, activity: Mapping[str, Any], account_id: str = ACCOUNT_ID
    ) -> None:
        """One activity of a group's history (its `AutoScalingGroupName`, Description, Cause, StartTime,
        EndTime, StatusCode...), answered by DescribeScalingActivities until the next reset."""
        self.scaling_activities.record(account_id, region, activity)


def _drop_backends_made_by_reset() -> None:
    """Empty every moto backend store of the process.

    moto's reset re-initialises each backend before dropping it, and an initialiser that looks up
    another service's backend (Auto Scaling's looks up EC2's) makes that one anew after its store
    was emptied: it would outlive the reset with ids drawn before the reseed, and the next seed
    would not draw what the first seed of a fresh process draws.
    """
    with backend_lock:
        for name, module in list(sys.modules.items()):
            if name.startswith("moto.") and name.endswith(".models"):
                for store in vars(module).values():
                    if isinstance(store, BackendDict):
                        store.clear()


def _naive(moment: datetime) -> datetime:
    # moto keeps naive UTC datetimes.
    return moment.astimezone(UTC).replace(tzinfo=None)
