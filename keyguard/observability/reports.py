"""Usage reports as JSON-ready data, the one shape the CLI (``keyguard usage --json``) and the
management API (``GET /api-keys/{id}/usage``) both answer with."""

from __future__ import annotations

from typing import Any

from keyguard.core.clock import to_iso
from keyguard.observability.model import STATUS_CLASSES, UsageReport

__all__ = ["report_dict"]


def report_dict(report: UsageReport, *, name: str | None = None) -> dict[str, Any]:
    """``report`` as plain data: ``key_id``/``owner``, ``total``, ``last_used_at`` (ISO time or
    ``None``), ``last_client``, and ``days`` oldest first, each with ``day`` (ISO date),
    ``by_status`` (every status class), ``by_route`` and ``total``; ``name`` when given."""
    data: dict[str, Any] = {
        "key_id": report.key_id,
        "owner": report.owner,
        "total": report.total,
        "last_used_at": to_iso(report.last_used_at) if report.last_used_at is not None else None,
        "last_client": report.last_client,
        "days": [
            {
                "day": d.day.isoformat(),
                "by_status": {c: int(d.by_status.get(c, 0)) for c in STATUS_CLASSES},
                "by_route": dict(sorted(d.by_route.items())),
                "total": d.total,
            }
            for d in report.days
        ],
    }
    if name is not None:
        data["name"] = name
    return data
