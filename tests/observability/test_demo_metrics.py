"""The demo serves /metrics (public, parsed by prometheus_client's parser), with no key
material anywhere in it after traffic."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from keyguard.demo import bootstrap, create_app
from keyguard.stores.memory import MemoryStore


def test_the_demo_serves_metrics_without_key_material() -> None:
    store = MemoryStore()
    keys = bootstrap(store)
    app = create_app(store=store)
    admin = keys.created["admin"]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))

    async def traffic() -> str:
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            for _ in range(3):
                assert (
                    await client.get("/agents", headers={"Authorization": f"UserKey {admin}"})
                ).status_code == 200
            assert (await client.get("/agents")).status_code == 401
            response = await client.get("/metrics")
            assert response.status_code == 200
            return response.text

    import asyncio

    text = asyncio.run(traffic())
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["keyguard_active_keys"].samples[0].value == 2
    assert "keyguard_cache_requests" in families
    assert "keyguard_requests" in families
    secret = admin.rsplit("_", 1)[1]
    for i in range(len(secret) - 7):
        assert secret[i : i + 8] not in text
