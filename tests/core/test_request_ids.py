"""Request ids: 16 lower-case hex characters, distinct, and distinct across forked workers."""

from __future__ import annotations

import os
import re
import sys

import pytest

from keyguard.core.render import new_request_id, request_id_from

HEX16 = re.compile(r"[0-9a-f]{16}")


def test_a_request_id_is_sixteen_hex_characters_and_never_repeats() -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert all(HEX16.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_plain_caller_id_is_kept_and_anything_else_replaced() -> None:
    assert request_id_from(b"abc-123") == "abc-123"
    assert HEX16.fullmatch(request_id_from(b"bad id\r\nx"))
    assert HEX16.fullmatch(request_id_from(None))
    assert HEX16.fullmatch(request_id_from("x" * 129))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_workers_do_not_share_a_sequence() -> None:
    """A worker forked from a parent that already made ids must not repeat the parent's next
    ones (pre-fork servers: gunicorn, uvicorn --workers)."""
    new_request_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, " ".join(new_request_id() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    child = set(b"".join(chunks).decode().split())
    parent = {new_request_id() for _ in range(50)}
    assert len(child) == 50
    assert not child & parent, sys.platform
