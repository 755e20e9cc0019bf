"""``python -m keyguard.management.cli``: the ``keyguard`` command line."""

from __future__ import annotations

from keyguard.management.cli.entry import main

raise SystemExit(main())
