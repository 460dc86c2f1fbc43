"""Property-based fuzzing of every operation in /openapi.json against a live server on the real stores
(PostgreSQL + Redis): whatever the input, never a 5xx other than 503-with-Retry-After, never a hang,
never a status code, content type, header or body the OpenAPI document does not declare."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import claimed_redis_db, fresh_pg_database
from tests.live_server import Site, serve

ADMIN = ("13800000077", "fuzz-admin-secret")


@pytest.fixture(scope="module")
def live_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("fuzz")
    with fresh_pg_database() as pg, claimed_redis_db(7) as redis_url:
        settings = {
            "RAILBOOK_DATABASE_URL": pg,
            "RAILBOOK_REDIS_URL": redis_url,
            "RAILBOOK_ADMIN_MOBILE": ADMIN[0],
            "RAILBOOK_ADMIN_PASSWORD": ADMIN[1],
            "RAILBOOK_ARGON2_TIME_COST": "1",
            "RAILBOOK_ARGON2_MEMORY_COST": "1024",
            "RAILBOOK_RATE_LIMITS": "off",
            "RAILBOOK_SALE_DAYS_AHEAD": "2",
        }
        with serve(workdir, settings) as site:
            yield site


def schemathesis(site: Site, cwd: Path, options: list[str], timeout: float) -> str:
    """``st run`` on the site's document as the admin with ``options``; its output, once it passed."""
    login = httpx.post(f"{site.url}/api/v1/auth/login", json={"mobile": ADMIN[0], "password": ADMIN[1]})
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    st = Path(sys.executable).with_name("st")
    common = ["--max-examples", "15", "--request-timeout", "20", "--generation-deterministic"]
    result = subprocess.run(
        [
            str(st),
            "run",
            f"{site.url}/openapi.json",
            *options,
            *common,
            "-H",
            f"Authorization: Bearer {token}",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    output = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    assert "passed" in output.lower(), output
    return output


@pytest.fixture
def embedded_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A site of its own in the embedded mode (SQLite, in-process parts): the run above leaves its
    site with blocked addresses and mobiles, which no longer log in."""
    settings = {
        "RAILBOOK_ADMIN_MOBILE": ADMIN[0],
        "RAILBOOK_ADMIN_PASSWORD": ADMIN[1],
        "RAILBOOK_ARGON2_TIME_COST": "1",
        "RAILBOOK_ARGON2_MEMORY_COST": "1024",
        "RAILBOOK_RATE_LIMITS": "off",
    }
    with serve(tmp_path_factory.mktemp("embedded"), settings) as site:
        yield site


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_no_server_errors_for_any_generated_request(live_site: Site, tmp_path: Path) -> None:
    # Every check but positive data acceptance: a schema-valid request may still be refused with 422
    # by the rules (a station that must exist, an ID number's check digit); see the test below.
    schemathesis(
        live_site, tmp_path, ["--checks", "all", "--exclude-checks", "positive_data_acceptance"], timeout=840
    )


# The operations whose every refusal of form /openapi.json states (each other one refuses something a
# schema cannot say: a date outside the sale window, a bad cursor or signature, a body's code unlike
# the path's, an ID number's check digit, a person's name of letters of any script, an address).
STATED = (
    "GET /api/v1/stations",
    "GET /api/v1/trains/{code}/stops",
    "POST /api/v1/auth/login",
    "GET /api/v1/captcha",
    "GET /api/v1/me",
    "GET /api/v1/passengers",
    "DELETE /api/v1/passengers/{passenger_id}",
    "GET /api/v1/tickets",
    "GET /api/v1/waitlist",
    "GET /api/v1/orders/{order_id}",
    "POST /api/v1/orders/{order_id}/pay",
    "POST /api/v1/orders/{order_id}/cancel",
    "POST /api/v1/tickets/{ticket_id}/refund",
    "POST /api/v1/tickets/{ticket_id}/change",
    "DELETE /api/v1/waitlist/{waitlist_id}",
    "GET /api/v1/admin/stations",
    "POST /api/v1/admin/stations",
    "GET /api/v1/admin/trains",
    "GET /api/v1/admin/trains/{code}",
    "DELETE /api/v1/admin/trains/{code}",
    "GET /api/v1/admin/blocklist",
    "DELETE /api/v1/admin/blocklist/{block_id}",
)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_requests_valid_under_the_document_are_accepted(embedded_site: Site, tmp_path: Path) -> None:
    """Positive data acceptance on the operations in ``STATED``: no request the document allows is
    refused 400 or 422. Text is ASCII without NUL: the document states no control characters (C0,
    C1), but not the format, private-use and unassigned characters the domain refuses as well, nor
    the guard's NUL (see ``api.input_patterns``)."""
    selected = [arg for name in STATED for arg in ("--include-name", name)]
    options = ["--exclude-checks", "all", "--checks", "positive_data_acceptance", *selected]
    text = ["--generation-allow-x00", "false", "--generation-codec", "ascii"]
    output = schemathesis(embedded_site, tmp_path, [*options, *text], timeout=240)
    assert f"Selected: {len(STATED)}/" in output, output
