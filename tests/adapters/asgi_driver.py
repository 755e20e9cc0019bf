"""A minimal in-process ASGI client: full control over raw headers (duplicates, control
characters) that HTTP client libraries would normalise or refuse."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.adapters.cases import Reply


async def call(app: Any, method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    names = [k.decode("latin-1").lower() for k, _ in start["headers"]]
    assert len(names) == len(set(names)), f"duplicate header fields: {names}"
    out: dict[str, str] = {}
    for k, v in start["headers"]:
        out[k.decode("latin-1").lower()] = v.decode("latin-1")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Reply(start["status"], out, body)


def sync_send(app: Any) -> Any:
    def send(method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
        return asyncio.run(call(app, method, path, headers))

    return send
