"""moto's server on a free 127.0.0.1 port, in this process, with Cost Explorer answered by the sandbox.

The server runs in a thread of the calling process so the seed can reach moto's in-process backends
for what the AWS API cannot do (backdating launch times). Those backends are process-global: do not
run `moto.mock_aws` in the same process while a Sandbox is up, it resets them.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import boto3
import requests
from botocore.config import Config
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from finops.sandbox import metric_index
from finops.sandbox.cost_explorer import TARGET_PREFIX, CostExplorerEmulator, CostExplorerError

ACCOUNT_ID = DEFAULT_ACCOUNT_ID
DEFAULT_REGION = "us-east-1"
ACCESS_KEY_ID = "sandbox"
SECRET_ACCESS_KEY = "sandbox"

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
        app = CostExplorerMiddleware(DomainDispatcherApplication(create_backend_app), self.cost_explorer)
        self._server = make_server(
            self.host, self.port, app, threaded=True, request_handler=_QuietRequestHandler
        )
        metric_index.install()
        self._thread = threading.Thread(target=self._server.serve_forever, name="mlp-sandbox", daemon=True)
        self._thread.start()
        # moto's backends are process-wide: start from an empty account whatever ran before.
        self.reset()
        return self

    def reset(self) -> None:
        """Empty the account: every moto resource and the Cost Explorer line items."""
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=60).raise_for_status()
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
        # moto keeps naive UTC datetimes.
        instance.launch_time = launched_at.astimezone(UTC).replace(tzinfo=None)
