"""A fault-injecting HTTP proxy for reliability tests: S3 clients talk to it, it talks to moto.

The proxy forwards every request to an upstream endpoint unchanged (Host header and body kept,
so SigV4 signatures stay valid) until a scheduled fault matches. A fault answers with an HTTP
error (500/503 with an S3-style XML body), delays the request past the client's timeout, or
resets the TCP connection after reading the request. Faults apply to the next N matching
requests (or forever) and can be limited to methods and to a path pattern.

Only a fault injector: tests assert on what the real client (boto3, DuckDB) does with it.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
_S3_ERRORS = {500: "InternalError", 503: "ServiceUnavailable"}


@dataclass
class Fault:
    """What to do with matching requests; ``times=None`` means every matching request."""

    action: str  # "status" | "delay" | "reset"
    times: int | None = 1
    methods: frozenset[str] | None = None
    path: re.Pattern[str] | None = None
    status: int = 503
    delay: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        return self.path is None or self.path.search(path) is not None


@dataclass(frozen=True)
class Seen:
    """One request the proxy handled and what it did with it (``pass`` or the fault action)."""

    method: str
    path: str
    outcome: str


@dataclass
class FaultProxy:
    """A threaded proxy on 127.0.0.1; use ``url`` as the S3 endpoint. Start with :meth:`start`."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        parsed = urlparse(self.upstream)
        self._up_host, self._up_port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- control ------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fault-proxy").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the proxy first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(
        self,
        action: str,
        times: int | None = 1,
        methods: str | tuple[str, ...] | None = None,
        path: str | None = None,
        status: int = 503,
        delay: float = 0.0,
    ) -> Fault:
        """Schedule a fault; ``path`` is a regex searched in the request path (``/bucket/key?…``)."""
        if action not in ("status", "delay", "reset"):
            raise ValueError(f"unknown fault action {action!r}")
        if isinstance(methods, str):
            methods = (methods,)
        fault = Fault(
            action=action,
            times=times,
            methods=frozenset(m.upper() for m in methods) if methods else None,
            path=re.compile(path) if path else None,
            status=status,
            delay=delay,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.seen.clear()

    def outcomes(self, method: str | None = None, path: str | None = None) -> list[str]:
        """The outcome of every request seen so far (filtered by method and path regex)."""
        pattern = re.compile(path) if path else None
        with self._lock:
            return [
                s.outcome
                for s in self.seen
                if (method is None or s.method == method) and (pattern is None or pattern.search(s.path))
            ]

    def _pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    outcome = f"{fault.action}:{fault.status}" if fault.action == "status" else fault.action
                    self.seen.append(Seen(method, path, outcome))
                    return fault
            self.seen.append(Seen(method, path, "pass"))
            return None


@contextmanager
def running_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        return

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            # forwarded verbatim (still chunked); the Transfer-Encoding header goes along
            raw = bytearray()
            while True:
                size_line = self.rfile.readline()
                raw += size_line
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers up to the blank line
                        line = self.rfile.readline()
                        raw += line
                        if line in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        fault = self.owner._pick(self.command, self.path)
        if fault is not None and fault.action == "reset":
            self._reset()
            return
        if fault is not None and fault.action == "status":
            self._error(fault.status)
            return
        if fault is not None and fault.action == "delay":
            time.sleep(fault.delay)
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
        conn = http.client.HTTPConnection(self.owner._up_host, self.owner._up_port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response_only(resp.status, resp.reason)
            length_sent = False
            for key, value in resp.getheaders():
                lower = key.lower()
                if lower in HOP_BY_HOP:
                    continue
                if lower == "content-length":
                    if self.command == "HEAD":
                        self.send_header(key, value)
                        length_sent = True
                    continue
                self.send_header(key, value)
            if not length_sent:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a delay fault): nothing to send
        finally:
            conn.close()

    def _error(self, status: int) -> None:
        code = _S3_ERRORS.get(status, "InternalError")
        payload = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>injected fault</Message><RequestId>fault-proxy</RequestId></Error>"
        ).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _reset(self) -> None:
        """Close with SO_LINGER 0: the client gets a TCP RST instead of a response.

        The descriptor really closes once ``finish`` has closed the handler's file objects;
        no ``shutdown`` first, which would send a FIN and look like a clean end of stream.
        """
        self.close_connection = True
        with suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def finish(self) -> None:
        with suppress(OSError):
            super().finish()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle  # noqa: N815 (http.server's names)
