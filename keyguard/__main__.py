"""``python -m keyguard``: the ``keyguard`` command line."""

from __future__ import annotations

from keyguard.management.cli import main

raise SystemExit(main())
