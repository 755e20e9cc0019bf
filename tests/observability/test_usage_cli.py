"""``keyguard usage``: the table, the bar chart (width-aware, ASCII fallback), --json, and
clear errors — against the KeyManager.usage/owner_usage contract (a stand-in here; the
end-to-end test with real counters is in test_usage_e2e)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from keyguard.management.cli.usage import ASCII_BLOCKS, BLOCKS, bar, render
from keyguard.management.manager import KeyManager
from keyguard.observability.model import STATUS_CLASSES, UsageDay, UsageReport
from tests.management.cli_support import Runner, assert_one_line_error, create, init, isolate

TODAY = date(2030, 3, 17)


def report(key_id: str | None = None, owner: str | None = None, days: int = 3) -> UsageReport:
    out = []
    for i in range(days):
        day = TODAY - timedelta(days=days - 1 - i)
        n = (i + 1) * 10
        by_status = {"2xx": n, "3xx": 0, "4xx": i, "429": 1 if i == days - 1 else 0, "5xx": 0}
        out.append(
            UsageDay(
                day, by_status, {"GET /agents": n, "POST /agents": i + 1 if i == days - 1 else 0}
            )
        )
    return UsageReport(
        tuple(out), key_id=key_id, owner=owner, last_used_at=1_900_000_000.0, last_client="10.0.0.7"
    )


@pytest.fixture
def run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Runner:
    isolate(tmp_path, monkeypatch)
    runner = Runner(capsys, monkeypatch)
    init(runner)
    asked: list[tuple[str, Any, int]] = []

    def usage(self: KeyManager, key_id: str, *, days: int = 30) -> UsageReport:
        asked.append(("key", key_id, days))
        return (
            report(key_id=key_id, days=days)
            if key_id.startswith(USED[0])
            else UsageReport(
                tuple(UsageDay(TODAY, dict.fromkeys(STATUS_CLASSES, 0), {}) for _ in range(1)),
                key_id=key_id,
            )
        )

    def owner_usage(self: KeyManager, owner: str, *, days: int = 30) -> UsageReport:
        asked.append(("owner", owner, days))
        return report(owner=owner, days=days)

    monkeypatch.setattr(KeyManager, "usage", usage, raising=False)
    monkeypatch.setattr(KeyManager, "owner_usage", owner_usage, raising=False)
    runner.asked = asked  # type: ignore[attr-defined]
    return runner


USED = [""]


def test_bar_is_stacked_scaled_and_never_empty_for_a_used_day() -> None:
    assert bar({"2xx": 10}, 10, 20, BLOCKS) == "█" * 20
    assert bar({"2xx": 5, "4xx": 5}, 10, 20, BLOCKS) == "█" * 10 + "▒" * 10
    assert bar({"2xx": 1}, 1000, 20, BLOCKS) == "█"  # at least one cell
    assert bar({"2xx": 0}, 10, 20, BLOCKS) == ""
    drawn = bar({"2xx": 3, "3xx": 1, "4xx": 1, "429": 1, "5xx": 1}, 7, 7, ASCII_BLOCKS)
    assert drawn == "###=-.x"
    for width in (1, 7, 33, 200):
        assert len(bar({"2xx": 7, "429": 3}, 10, width, BLOCKS)) == width


def test_render_table_chart_last_use_and_routes() -> None:
    lines = render(report(key_id="3F9aQ2xLm7Pw"), name="ci deploy", width=80)
    assert lines[0] == "key 3F9aQ2xLm7Pw (ci deploy) · last 3 days · 64 requests"
    assert lines[2].split() == ["DAY", *STATUS_CLASSES, "TOTAL"]
    assert lines[3].split() == ["2030-03-15", "10", "0", "0", "0", "0", "10", "█" * 11]
    assert lines[5].split()[:7] == ["2030-03-17", "30", "0", "2", "1", "0", "33"]
    assert all(len(line) <= 80 for line in lines[3:6])
    # the longest day fills the room: 80 columns less the 42 of the table and 2 of space
    assert lines[5].endswith("  " + "█" * 33 + "▒" * 2 + "░")
    assert len(lines[5]) == 80
    assert lines[6].split() == ["TOTAL", "60", "0", "3", "1", "0", "64"]
    assert "last used: 2030-03-17T17:46:40Z from 10.0.0.7" in lines
    assert "top routes: GET /agents 60, POST /agents 3" in lines
    narrow = render(report(key_id="3F9aQ2xLm7Pw"), width=20)
    assert narrow[5].split()[-1] == "█" * 9 + "▒"  # a minimum of 10 cells of room


def test_render_escapes_what_came_from_requests() -> None:
    r = UsageReport(
        (UsageDay(TODAY, {"2xx": 1}, {"GET /x\n\x1b[31m": 1}),),
        owner="evil\nowner",
        last_used_at=1_900_000_000.0,
        last_client="1.2.3.4\r\nX: y",
    )
    text = "\n".join(render(r, width=80))
    assert "\x1b" not in text
    assert "\r" not in text
    assert "owner evil\\nowner" in text
    assert "1.2.3.4\\r\\nX: y" in text


def test_usage_of_one_key(run: Runner) -> None:
    _, record = create(run, "--name", "ci deploy")
    USED[0] = record["key_id"]
    r = run("usage", record["key_id"], "--days", "3")
    assert r.code == 0, r.err
    assert r.out.startswith(f"key {record['key_id']} (ci deploy) · last 3 days · 64 requests\n")
    assert "█" in r.out or "#" in r.out
    data = json.loads(run("usage", record["key_id"], "--days", "3", "--json").out)
    assert data["key_id"] == record["key_id"]
    assert data["total"] == 64
    assert data["name"] == "ci deploy"
    assert data["days"][2] == {
        "day": "2030-03-17",
        "by_status": {"2xx": 30, "3xx": 0, "4xx": 2, "429": 1, "5xx": 0},
        "by_route": {"GET /agents": 30, "POST /agents": 3},
        "total": 33,
    }
    assert data["last_used_at"] == "2030-03-17T17:46:40Z"
    assert data["last_client"] == "10.0.0.7"


def test_usage_of_an_owner_and_of_every_used_key(run: Runner) -> None:
    _, used = create(run, "--name", "used")
    create(run, "--name", "idle")
    USED[0] = used["key_id"]
    r = run("usage", "--owner", "acme", "--days", "2")
    assert r.code == 0, r.err
    assert r.out.startswith("owner acme · last 2 days · ")
    every = run("usage", "--days", "3")
    assert every.code == 0, every.err
    assert every.out.count("· last 3 days ·") == 1  # the idle key is left out
    data = json.loads(run("usage", "--json").out)
    assert [k["key_id"] for k in data["keys"]] == [used["key_id"]]
    assert data["days"] == 30


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        pytest.param(("usage", "nosuchkeyid1"), 1, "nosuchkeyid1", id="unknown-id"),
        pytest.param(("usage", "not-an-id"), 2, "is not a key id", id="malformed-id"),
        pytest.param(("usage", "abcdefghijkl", "--owner", "x"), 2, "not both", id="both"),
        pytest.param(("usage", "--days", "0"), 2, "positive integer", id="zero-days"),
        pytest.param(("usage", "--days", "367"), 2, "from 1 to 366", id="too-many-days"),
        pytest.param(("usage", "--days", "x"), 2, "positive integer", id="bad-days"),
    ],
)
def test_usage_errors(run: Runner, args: tuple[str, ...], status: int, message: str) -> None:
    assert message in assert_one_line_error(run(*args), status)
