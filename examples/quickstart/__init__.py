"""The README's "Protect your app" examples: each file is copied verbatim into the README and
served for real by ``tests/test_readme.py``."""
