"""Protect a FastAPI app.  Needs: pip install ".[fastapi,server]"
Run:   uvicorn examples.quickstart.fastapi_app:app
Keys:  the store named by KEYGUARD_STORE_URL (default sqlite:///./keyguard.db)
"""

from typing import Annotated

from fastapi import Depends, FastAPI

from keyguard import Principal
from keyguard.adapters.fastapi import KeyGuard

guard = KeyGuard()  # the store named by KEYGUARD_STORE_URL (default sqlite:///./keyguard.db)
app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}  # no dependency: public


@app.get("/agents")
async def list_agents(key: Annotated[Principal, Depends(guard.require("agents:read"))]) -> dict:
    return {"agents": ["triage"], "caller": key.key_id}


@app.post("/agents", status_code=201)
async def create_agent(key: Annotated[Principal, Depends(guard.require("agents:write"))]) -> dict:
    return {"created": "agent-2", "owner": key.owner}


guard.install(app)  # problem+json denials, and the UserKey scheme with scopes in /docs
