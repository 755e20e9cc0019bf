"""Canary: a plaintext key never leaks — not into the SQLite files, reprs, log records,
exception messages, audit events, listings or error bodies."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.core.errors import KeyguardError
from keyguard.core.render import DEFAULT_RENDERER
from keyguard.management.manager import KeyManager
from keyguard.stores.sqlite import SQLiteStore
from tests.adapters.asgi_driver import call


def fragments(plaintext: str) -> list[str]:
    """The key, its secret, and any 16-character slice of the secret."""
    secret = plaintext.split("_", 2)[2]
    return [plaintext, secret, *(secret[i : i + 16] for i in range(0, len(secret) - 16, 8))]


def test_no_plaintext_anywhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "keys.db"
    seen: list[str] = []
    plaintexts: list[str] = []
    with SQLiteStore(db) as store:
        manager = KeyManager(store)
        admin = manager.create("admin", ["admin"], owner="acme")
        child = manager.create("child", ["agents:read"], parent=admin.record)
        rotated = manager.rotate(child.key_id, grace=60)
        revoked = manager.create("gone", ["agents:read"])
        manager.revoke(revoked.key_id, reason="test")
        plaintexts += [admin.plaintext, child.plaintext, rotated.plaintext, revoked.plaintext]
        seen += [repr(x) for x in (admin, child, rotated, revoked, admin.record, store, manager)]
        seen += [str(x) for x in (admin, child)]
        seen += [json.dumps(e.to_dict()) for e in manager.audit(limit=100)]
        seen += [json.dumps(r.public_dict(0)) for r in manager.iter_all()]

        # Exceptions raised with key material as input must not echo it.
        for bad in plaintexts:
            for op in (
                lambda b=bad: manager.get(b),
                lambda b=bad: manager.revoke(b, reason="x"),
                lambda b=bad: manager.create(b, ["nope:nope"]),
            ):
                with pytest.raises(KeyguardError) as info:
                    op()
                seen.append(str(info.value))

        # Every denial path, through the middleware, with logs captured at DEBUG.
        async def app(scope: object, receive: object, send: object) -> None:
            raise AssertionError("denied requests must not reach the app")

        mw = KeyGuardMiddleware(app, store=store, rate_limits=None)
        headers_cases = [
            [("Authorization", f"UserKey {revoked.plaintext}")],
            [("Authorization", f"UserKey {revoked.plaintext[:-1]}x")],
            [("Authorization", f"Bearer {admin.plaintext}")],
            [("Authorization", f"UserKey {admin.plaintext}"), ("Authorization", "UserKey x")],
            [("Authorization", f"UserKey {admin.plaintext}\x01")],
        ]
        for headers in headers_cases:
            reply = asyncio.run(call(mw, "GET", "/agents", headers))
            assert reply.status in (400, 401)
            seen.append(reply.body.decode())
            seen.append(json.dumps(reply.headers))
        decision = mw.verifier.authenticate(f"UserKey {admin.plaintext}")
        seen += [repr(decision), repr(decision.principal), repr(mw.verifier)]
        problem = DEFAULT_RENDERER.render(
            mw.verifier.authenticate(f"UserKey {revoked.plaintext}"), "rid"
        )
        seen.append(problem.body.decode())
    seen += [record.getMessage() for record in caplog.records]
    seen += [str(record.args) for record in caplog.records]
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for plaintext in plaintexts:
        for fragment in fragments(plaintext):
            assert fragment.encode() not in raw, "key material in the SQLite files"
            for text in seen:
                assert fragment not in text, f"key material leaked into: {text[:120]}"
