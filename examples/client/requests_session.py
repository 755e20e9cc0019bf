"""The same with requests, and a POST that may be retried.  Needs: keyguard[client].
Run:   KEYGUARD_API_KEY=kg_... API_BASE_URL=http://127.0.0.1:8000 \\
       python -m examples.client.requests_session
"""

import os
import uuid

import requests

from keyguard.client.requests import UserKeyAuth


def create_agent(name: str) -> dict[str, object]:
    base_url = os.environ.get("API_BASE_URL", "http://127.0.0.1:8000")
    with requests.Session() as session:
        session.auth = UserKeyAuth()  # KEYGUARD_API_KEY or KEYGUARD_API_KEY_FILE
        # POST is not idempotent: it is retried on 429/503 only with an Idempotency-Key.
        response = session.post(
            f"{base_url}/agents",
            json={"name": name},
            headers={"Idempotency-Key": str(uuid.uuid4())},
            timeout=10,
        )
        response.raise_for_status()
        created: dict[str, object] = response.json()
        return created


if __name__ == "__main__":
    print(create_agent("triage-bot-2"))
