"""The ``railbook`` command refuses what it cannot do with one line on stderr and a non-zero exit
status, never a traceback: a sale day outside the sale window, a timetable file it cannot read, and
the separate ``api`` / ``worker`` roles without Redis (their queue would be one nobody reads)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from railbook.adapters.db.migrate import upgrade
from railbook.kit.clock import beijing_today


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An embedded configuration on a migrated SQLite file of this module's own."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('cli') / 'railbook.db'}"
    upgrade(url)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAILBOOK_")}
    return {**environ, "RAILBOOK_DATABASE_URL": url, "RAILBOOK_LOG_LEVEL": "warning"}


def _railbook(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "railbook.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(w in lines[0] for w in words), lines[0]


@pytest.mark.parametrize("days", [-1, 15, 400])
def test_sales_open_refuses_a_date_outside_the_sale_window(env: dict[str, str], days: int) -> None:
    date = (beijing_today() + dt.timedelta(days=days)).isoformat()
    _refused(_railbook(env, "sales", "open", "--date", date), date, "not on sale")


def test_sales_open_refuses_more_days_than_the_window_and_a_bad_date(env: dict[str, str]) -> None:
    _refused(_railbook(env, "sales", "open", "--days", "16"), "not on sale")
    _refused(_railbook(env, "sales", "open", "--date", "12/01/2026"), "not a date")


def test_timetable_import_of_a_bad_file_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"stations": [', encoding="utf-8")
    _refused(_railbook(env, "timetable", "import", str(broken)), "broken.json", "not a readable timetable")
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("stations: []\ntrains:\n  - code: G1\n", encoding="utf-8")
    _refused(_railbook(env, "timetable", "import", str(invalid)), "invalid.yaml")


@pytest.mark.parametrize("role", ["api", "worker"])
def test_a_separate_role_refuses_to_start_without_redis(env: dict[str, str], role: str) -> None:
    _refused(_railbook(env, role), "RAILBOOK_REDIS_URL", "railbook serve")
