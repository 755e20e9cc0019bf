"""A receiver of keyguard's notification webhooks: check the signature, then act.

Standard library only. Run it with ``python webhook_receiver.py`` (port 8081) and point
``keyguard notify --check --webhook http://host:8081/keyguard`` at it, with the same secret in
``KEYGUARD_WEBHOOK_SECRET`` on both sides.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE = 300  # seconds: refuse a signature older than this (a replayed request)


def verified(secret: bytes, header: str, body: bytes, now: float | None = None) -> bool:
    """Keyguard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>."""
    try:
        fields = [part.split("=", 1) for part in header.split(",")]
        stamp = int(next(v for k, v in fields if k.strip() == "t"))
        signatures = [v for k, v in fields if k.strip() == "v1"]
    except (StopIteration, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > TOLERANCE:
        return False
    expected = hmac.new(secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, s) for s in signatures)


def handle(notification: dict[str, object]) -> None:
    # Page someone, open a ticket, post to chat... Keyguard-Event-Id repeats on a retry:
    # keep the ids you have handled if a duplicate would hurt.
    print(f"{notification['type']}: {notification['message']}")


class Receiver(BaseHTTPRequestHandler):
    secret = os.environ.get("KEYGUARD_WEBHOOK_SECRET", "").encode()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not verified(self.secret, self.headers.get("Keyguard-Signature", ""), body):
            self.send_response(401)  # keyguard does not retry a 4xx
            self.end_headers()
            return
        handle(json.loads(body))
        self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    HTTPServer(("0.0.0.0", 8081), Receiver).serve_forever()  # noqa: S104 - a receiver listens
