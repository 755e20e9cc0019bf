"""A minimal in-process WSGI client that joins repeated headers the way WSGI servers do."""

from __future__ import annotations

import io
import sys
from typing import Any

from tests.adapters.cases import Reply


def call(app: Any, method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path.encode().decode("latin-1"),
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = environ[key] + "," + value if key in environ else value
    captured: dict[str, Any] = {}

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        captured["status"] = int(status.split()[0])
        captured["headers"] = response_headers
        return lambda data: None

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    names = [k.lower() for k, _ in captured["headers"]]
    assert len(names) == len(set(names)), f"duplicate header fields: {names}"
    return Reply(captured["status"], {k.lower(): v for k, v in captured["headers"]}, body)


def sender(app: Any) -> Any:
    return lambda method, path, headers: call(app, method, path, headers)
