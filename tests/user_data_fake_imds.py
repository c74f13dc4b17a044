"""A local EC2 instance metadata service that speaks IMDSv2 only, for the user-data script's tests.

Tests switch the spot `instance-action` and rebalance answers while the script runs, and read how
many reads arrived without a valid token (an IMDSv1-style read is a bug in the script).
"""

from __future__ import annotations

import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


class FakeImds:
    """IMDSv2 on 127.0.0.1; `url` is what the script takes as MLP_IMDS_ENDPOINT."""

    def __init__(self, instance_id: str = "i-0fa1ce0000000001") -> None:
        self.instance_id = instance_id
        self.instance_action: str | None = None
        self.rebalance: str | None = None
        self.instance_tags: dict[str, str] = {}
        # Reads without a currently valid token: IMDSv1-style reads or expired tokens.
        self.tokenless_reads = 0
        self.notice_reads = 0
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeImds:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def expire_tokens(self) -> None:
        """Every token issued so far stops working, as after its TTL."""
        with self._lock:
            self._tokens.clear()

    def answer(self, path: str) -> str | None:
        """The body for a metadata path under /latest/, None for 404."""
        tag_prefix = "meta-data/tags/instance/"
        if path.startswith(tag_prefix):
            return self.instance_tags.get(path.removeprefix(tag_prefix))
        if path in ("meta-data/spot/instance-action", "meta-data/events/recommendations/rebalance"):
            with self._lock:
                self.notice_reads += 1
            return self.instance_action if path.endswith("instance-action") else self.rebalance
        return {"meta-data/instance-id": self.instance_id}.get(path)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                if self.path != "/latest/api/token" or not self.headers.get(TOKEN_TTL_HEADER):
                    self._reply(400, "")
                    return
                token = secrets.token_urlsafe(24)
                with imds._lock:
                    imds._tokens.add(token)
                self._reply(200, token)

            def do_GET(self) -> None:
                with imds._lock:
                    authorized = self.headers.get(TOKEN_HEADER) in imds._tokens
                    if not authorized:
                        imds.tokenless_reads += 1
                if not authorized:
                    self._reply(401, "")
                    return
                body = imds.answer(self.path.removeprefix("/latest/"))
                self._reply(404, "Not Found") if body is None else self._reply(200, body)

            def _reply(self, status: int, body: str) -> None:
                payload = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                """Silence per-request logging; the script's own log tells the story."""

        return Handler
