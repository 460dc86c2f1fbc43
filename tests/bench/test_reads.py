"""``railbook bench reads`` end to end on a small sale (real PostgreSQL, Redis and servers): every
route is read back under its member's token and answers 200; the figures and the JSON are there.
No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from railbook.bench.reads import ROUTES, run

pytestmark = pytest.mark.slow


def test_every_route_is_read_back_as_its_member(tmp_path: Path) -> None:
    result = run(members=6, seconds=1.0, load_procs=1, connections=4, out=tmp_path)
    assert result["orders"] >= 6 and result["members"] == 6
    for route in ROUTES:
        figures = result["routes"][route]
        assert figures["requests"] > 0, route
        assert set(figures["statuses"]) == {"200"}, (route, figures["statuses"])
        assert figures["errors"] == 0
        assert figures["p50_ms"] <= figures["p99_ms"]
    assert json.loads((tmp_path / "reads.json").read_text())["routes"].keys() == set(ROUTES)
    assert result["load_cpu_s"] > 0
