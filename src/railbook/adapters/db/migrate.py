"""Run the Alembic migrations programmatically (``railbook serve`` and the test set-up use this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[4]


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (blocking; call from a thread in async code)."""
    command.upgrade(alembic_config(url), "head")
