"""A webhook receiver for tests: a real HTTP server on a free local port, in a thread.

It checks each request's ``Keyguard-Signature`` with its *own* HMAC code (not keyguard's
``verify_signature``, so a wrong signer cannot pass by agreeing with a wrong verifier), records
what it received, and answers from a script of statuses (then 200)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    secret: bytes
    url: str = ""
    statuses: list[int] = field(default_factory=list)  # answered first, in order; then 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, header: str | None, body: bytes) -> bool:
        if not header:
            return False
        parts = dict(p.split("=", 1) for p in header.split(","))
        stamp = int(parts["t"])
        expected = hmac.new(self.secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        return abs(time.time() - stamp) < 300 and hmac.compare_digest(parts["v1"], expected)

    @property
    def delivered(self) -> list[Received]:
        """Requests answered 2xx (the ones that count as delivered)."""
        with self.lock:
            return [r for r in self.received if r.headers.get("x-answered") == "200"]


@contextmanager
def receiver(secret: str, statuses: list[int] | None = None) -> Iterator[Receiver]:
    state = Receiver(secret.encode(), statuses=list(statuses or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            with state.lock:
                status = state.statuses.pop(0) if state.statuses else 200
                headers["x-answered"] = str(status)
                state.received.append(
                    Received(headers, body, state.check(headers.get("keyguard-signature"), body))
                )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/keyguard?token=abc"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
