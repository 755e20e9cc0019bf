"""Manage keys from code (the README's "From code" block).  Needs: the core install.
Run:   python -m examples.snippets.keys_from_code   (KEYGUARD_STORE_URL, default ./keyguard.db)
"""

from keyguard.management import KeyManager


def main(store_url: str = "sqlite:///./keyguard.db") -> str:
    with KeyManager(store_url) as keys:
        created = keys.create("ci-bot", ["agents:read"], expires_in=90 * 86400, owner="team-a")
        print(created.plaintext)  # the only time the key exists in plaintext
        keys.rotate(created.key_id, grace=3600)
        keys.revoke(created.key_id, reason="rotated out")
        return created.key_id


if __name__ == "__main__":
    import os

    main(os.environ.get("KEYGUARD_STORE_URL", "sqlite:///./keyguard.db"))
