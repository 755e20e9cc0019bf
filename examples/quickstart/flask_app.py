"""Protect a Flask app.  Needs: pip install ".[flask]"
Run:   flask --app examples.quickstart.flask_app run
Keys:  the store named by KEYGUARD_STORE_URL (default sqlite:///./keyguard.db)
"""

from flask import Flask

from keyguard import RoutePolicy
from keyguard.adapters.flask import KeyGuard, current_principal

app = Flask(__name__)
KeyGuard(
    app,  # the store named by KEYGUARD_STORE_URL (default sqlite:///./keyguard.db)
    policy=RoutePolicy(
        {"GET /agents": "agents:read", "POST /agents": "agents:write"},
        public=["/health"],  # every other route is denied: deny by default
    ),
)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/agents")
def list_agents() -> dict[str, object]:
    return {"agents": ["triage"], "caller": current_principal().key_id}


@app.post("/agents")
def create_agent() -> tuple[dict[str, object], int]:
    return {"created": "agent-2", "owner": current_principal().owner}, 201
