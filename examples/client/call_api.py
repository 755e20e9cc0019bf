"""Call a keyguard-protected API with the key from the environment.  Needs: keyguard[client].
Run:   KEYGUARD_API_KEY=kg_... API_BASE_URL=http://127.0.0.1:8000 python -m examples.client.call_api
       (or KEYGUARD_API_KEY_FILE=/run/secrets/keyguard_api_key, as Docker and Kubernetes mount it)
"""

import os
import sys

import httpx

from keyguard.client import APIError, APIKeyFormatError, APIKeyMissing, RetryPolicy
from keyguard.client.httpx import UserKeyAuth


def main() -> int:
    try:
        # The key from KEYGUARD_API_KEY or KEYGUARD_API_KEY_FILE, checked before any request.
        auth = UserKeyAuth(retry=RetryPolicy(max_attempts=4, max_elapsed=60))
    except (APIKeyMissing, APIKeyFormatError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    base_url = os.environ.get("API_BASE_URL", "http://127.0.0.1:8000")
    with httpx.Client(base_url=base_url, auth=auth, timeout=10) as client:
        try:
            agents = client.get("/agents").json()["agents"]
        except APIError as exc:  # a keyguard denial: exc.code says which, exc.advice what to do
            print(f"refused: {exc}", file=sys.stderr)
            return 1
    print(f"{len(agents)} agents: {', '.join(a['name'] for a in agents)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
