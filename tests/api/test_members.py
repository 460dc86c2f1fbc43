"""Members over HTTP (API.md "Members"), on both store configurations."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

import httpx
import jwt
import pytest

from railbook.domain.identity import compose_id_card
from tests.support import ADMIN_MOBILE, ADMIN_PASSWORD, JWT_SECRET, login, register, unique

TEST_SECRET = JWT_SECRET
_sequence = itertools.count(1)


def id_card(birth: dt.date = dt.date(1990, 5, 17)) -> str:
    """A valid ID number no other test of this run uses."""
    n = next(_sequence)
    return compose_id_card("110105", birth + dt.timedelta(days=n // 1000), n % 1000)


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    details: dict[str, Any] = body["error"]["details"]
    return details


def fields_of(details: dict[str, Any]) -> set[str]:
    return {f["field"] for f in details.get("fields", [])}


async def test_register_login_me(client: httpx.AsyncClient) -> None:
    mobile = "137" + unique()[-8:].rjust(8, "0")
    r = await client.post(
        "/api/v1/auth/register", json={"mobile": mobile, "password": "s3cret-pass", "name": "王五"}
    )
    assert r.status_code == 201, r.text
    member_id = r.json()["member_id"]
    assert isinstance(member_id, int)

    r = await client.post("/api/v1/auth/login", json={"mobile": mobile, "password": "s3cret-pass"})
    assert r.status_code == 200, r.text
    token = r.json()
    assert token["token_type"] == "bearer"
    assert token["expires_in"] > 0
    assert jwt.decode(token["access_token"], TEST_SECRET, algorithms=["HS256"])["sub"] == str(member_id)

    r = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 200, r.text
    assert r.json() == {"member_id": member_id, "mobile": mobile, "name": "王五", "role": "member"}


async def test_admin_from_settings_has_role_admin(client: httpx.AsyncClient) -> None:
    headers = await login(client, ADMIN_MOBILE, ADMIN_PASSWORD)
    r = await client.get("/api/v1/me", headers=headers)
    assert r.status_code == 200
    assert r.json()["role"] == "admin"


async def test_duplicate_mobile_is_409(client: httpx.AsyncClient) -> None:
    member = await register(client)
    r = await client.post(
        "/api/v1/auth/register", json={"mobile": member["mobile"], "password": "other-pass-1", "name": "李四"}
    )
    assert_error(r, 409, "MOBILE_TAKEN")
    # The first account's password still works, the second one's does not.
    await login(client, member["mobile"], member["password"])
    r = await client.post("/api/v1/auth/login", json={"mobile": member["mobile"], "password": "other-pass-1"})
    assert_error(r, 401, "BAD_CREDENTIALS")


async def test_bad_credentials_look_the_same_for_unknown_mobile(client: httpx.AsyncClient) -> None:
    member = await register(client)
    wrong = await client.post(
        "/api/v1/auth/login", json={"mobile": member["mobile"], "password": member["password"] + "x"}
    )
    unknown = await client.post(
        "/api/v1/auth/login", json={"mobile": "10000000000", "password": "whatever-1"}
    )
    assert assert_error(wrong, 401, "BAD_CREDENTIALS") == assert_error(unknown, 401, "BAD_CREDENTIALS")
    assert wrong.json() == unknown.json()


@pytest.mark.parametrize(
    "body",
    [
        {"mobile": "1390000", "password": "long-enough", "name": "张三"},  # short mobile
        {"mobile": "23900000000", "password": "long-enough", "name": "张三"},  # not starting with 1
        {"mobile": "13900000000", "password": "short", "name": "张三"},  # password too short
        {"mobile": "13900000000", "password": "x" * 129, "name": "张三"},  # too long
        {"mobile": "13900000000", "password": "long-enough", "name": "Robert'); DROP TABLE member;--"},
        {"mobile": "13900000000", "password": "long-enough", "name": "张\x00三"},
        {"mobile": 13900000000, "password": "long-enough", "name": "张三"},  # wrong type
        {"mobile": "13900000000", "password": "long-enough", "name": "张三", "role": "admin"},  # extra field
        {"mobile": "13900000000", "password": "long-enough"},  # missing name
    ],
)
async def test_register_refuses_bad_input_and_writes_nothing(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    mobile = "136" + unique()[-8:].rjust(8, "0")
    if body.get("mobile") == "13900000000":
        body = {**body, "mobile": mobile}
    r = await client.post("/api/v1/auth/register", json=body)
    assert_error(r, 422, "VALIDATION_ERROR")
    r = await client.post("/api/v1/auth/login", json={"mobile": mobile, "password": "long-enough"})
    assert_error(r, 401, "BAD_CREDENTIALS")


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/register", content=b'{"mobile": "139', headers={"content-type": "application/json"}
    )
    assert_error(r, 422, "VALIDATION_ERROR")
    r = await client.post(
        "/api/v1/auth/login", content=b"[1, 2", headers={"content-type": "application/json"}
    )
    assert_error(r, 422, "VALIDATION_ERROR")


def _token(claims: dict[str, Any], secret: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


async def test_missing_tampered_and_expired_tokens_are_401(client: httpx.AsyncClient) -> None:
    member = await register(client)
    good = member["headers"]["Authorization"].split(" ", 1)[1]
    now = dt.datetime.now(dt.UTC)
    header, payload, signature = good.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    forged_admin = _token(
        {"sub": str(member["member_id"]), "role": "admin", "exp": now + dt.timedelta(hours=1)},
        secret="not-the-secret-" + "y" * 32,
    )
    expired = _token(
        {"sub": str(member["member_id"]), "role": "member", "exp": now - dt.timedelta(minutes=1)}
    )
    no_exp = _token({"sub": str(member["member_id"]), "role": "member"})
    unsigned = _token(
        {"sub": str(member["member_id"]), "exp": now + dt.timedelta(hours=1)}, secret="", algorithm="none"
    )
    cases: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {good}"},
        {"Authorization": f"Bearer {header}.{payload}.{flipped}"},
        {"Authorization": f"Bearer {forged_admin}"},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": f"Bearer {no_exp}"},
        {"Authorization": f"Bearer {unsigned}"},
        {"Authorization": "Bearer not.a.jwt"},
    ]
    for headers in cases:
        for method, path in (("GET", "/api/v1/me"), ("GET", "/api/v1/passengers")):
            r = await client.request(method, path, headers=headers)
            assert_error(r, 401, "UNAUTHORIZED")
    r = await client.get("/api/v1/me", headers=member["headers"])
    assert r.status_code == 200


async def test_passengers_add_list_delete(client: httpx.AsyncClient) -> None:
    member = await register(client)
    h = member["headers"]
    number = id_card()
    r = await client.post(
        "/api/v1/passengers", headers=h, json={"name": "李四", "id_card": number, "type": "adult"}
    )
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["name"] == "李四" and first["type"] == "adult"
    assert first["id_card_masked"] == number[:6] + "********" + number[-4:]
    student = id_card()
    r = await client.post(
        "/api/v1/passengers",
        headers=h,
        json={"name": "Anna Li", "id_card": student.lower(), "type": "student"},
    )
    assert r.status_code == 201, r.text

    r = await client.get("/api/v1/passengers", headers=h)
    assert r.status_code == 200
    listed = r.json()
    assert [p["name"] for p in listed] == ["李四", "Anna Li"]
    assert set(listed[0]) == {"passenger_id", "name", "id_card_masked", "type"}
    assert all(number not in str(p) for p in listed)

    r = await client.post(
        "/api/v1/passengers", headers=h, json={"name": "李四", "id_card": number, "type": "adult"}
    )
    assert_error(r, 409, "PASSENGER_EXISTS")

    r = await client.delete(f"/api/v1/passengers/{first['passenger_id']}", headers=h)
    assert r.status_code == 204 and r.content == b""
    r = await client.get("/api/v1/passengers", headers=h)
    assert [p["name"] for p in r.json()] == ["Anna Li"]
    r = await client.delete(f"/api/v1/passengers/{first['passenger_id']}", headers=h)
    assert_error(r, 404, "PASSENGER_NOT_FOUND")


async def test_someone_elses_passenger_is_404(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    other = await register(client)
    r = await client.post(
        "/api/v1/passengers",
        headers=owner["headers"],
        json={"name": "赵六", "id_card": id_card(), "type": "child"},
    )
    pid = r.json()["passenger_id"]
    r = await client.delete(f"/api/v1/passengers/{pid}", headers=other["headers"])
    assert_error(r, 404, "PASSENGER_NOT_FOUND")
    assert (await client.get("/api/v1/passengers", headers=other["headers"])).json() == []
    r = await client.get("/api/v1/passengers", headers=owner["headers"])
    assert [p["passenger_id"] for p in r.json()] == [pid]
    for absurd in ("0", "-1", str(2**63), "99999999999999999999999", "abc"):
        r = await client.delete(f"/api/v1/passengers/{absurd}", headers=other["headers"])
        assert_error(r, 422, "VALIDATION_ERROR")


async def test_the_same_person_may_travel_with_two_members(client: httpx.AsyncClient) -> None:
    number = id_card()
    for _ in range(2):
        member = await register(client)
        r = await client.post(
            "/api/v1/passengers", headers=member["headers"], json={"name": "钱七", "id_card": number}
        )
        assert r.status_code == 201, r.text
        assert r.json()["type"] == "adult"


async def test_passenger_limit(client: httpx.AsyncClient) -> None:
    member = await register(client)
    limit = client.app.state.container.settings.max_passengers_per_member  # type: ignore[attr-defined]
    for i in range(limit):
        r = await client.post(
            "/api/v1/passengers",
            headers=member["headers"],
            json={"name": f"乘客{'甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳'[i % 16]}", "id_card": id_card()},
        )
        assert r.status_code == 201, r.text
    r = await client.post(
        "/api/v1/passengers", headers=member["headers"], json={"name": "多余", "id_card": id_card()}
    )
    details = assert_error(r, 409, "PASSENGER_LIMIT")
    assert details["limit"] == limit
    assert len((await client.get("/api/v1/passengers", headers=member["headers"])).json()) == limit


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "李四", "id_card": "11010519491231003X"}, "id_card"),  # wrong check digit
        ({"name": "李四", "id_card": "110105194902300021"}, "id_card"),  # 30 February
        ({"name": "李四", "id_card": "1101051949123100"}, "id_card"),  # too short
        ({"name": "李四", "id_card": 110105194912310020}, "id_card"),  # a number, not text
        ({"name": "1'; DELETE FROM passenger;--", "id_card": "11010519491231002X"}, "name"),
        ({"name": "<img src=x onerror=alert(1)>", "id_card": "11010519491231002X"}, "name"),
        ({"name": "", "id_card": "11010519491231002X"}, "name"),
        ({"name": "李四", "id_card": "11010519491231002X", "type": "senior"}, "type"),
        ({"name": "李四", "id_card": "11010519491231002X", "member_id": 1}, "member_id"),
    ],
)
async def test_bad_passenger_is_422_and_nothing_written(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    member = await register(client)
    r = await client.post("/api/v1/passengers", headers=member["headers"], json=body)
    details = assert_error(r, 422, "VALIDATION_ERROR")
    assert field in fields_of(details), details
    assert (await client.get("/api/v1/passengers", headers=member["headers"])).json() == []


async def test_malformed_passenger_requests_write_nothing(client: httpx.AsyncClient) -> None:
    member = await register(client)
    h = {**member["headers"], "content-type": "application/json"}
    for content in (b"{", b"null", b"[]", b'{"name": "\xff\xfe"}', b'"x"'):
        r = await client.post("/api/v1/passengers", headers=h, content=content)
        assert 400 <= r.status_code < 500, (content, r.status_code)
        assert "error" in r.json()
    r = await client.delete("/api/v1/passengers/not-a-number", headers=member["headers"])
    assert_error(r, 422, "VALIDATION_ERROR")
    assert (await client.get("/api/v1/passengers", headers=member["headers"])).json() == []


async def test_password_hashing_is_bounded_and_sheds_the_excess() -> None:
    """Beyond the running hashes and the waiting room, a login is refused at once (503 LOGIN_BUSY)
    instead of queueing without bound; once the storm passes, hashing works again."""
    from railbook.config import Settings
    from railbook.domain.errors import Unavailable
    from railbook.services.members.passwords import PasswordHasher

    hasher = PasswordHasher(
        Settings(argon2_time_cost=1, argon2_memory_cost=1024), concurrency=1, queue_limit=1
    )
    results = await asyncio.gather(*(hasher.hash("storm-pass-1") for _ in range(4)), return_exceptions=True)
    hashes = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, Unavailable)]
    assert len(hashes) == 2 and len(refused) == 2, results
    assert all(r.code == "LOGIN_BUSY" and r.retry_after >= 1 for r in refused)
    assert (await hasher.verify("storm-pass-1", hashes[0]))[0]
    assert not (await hasher.verify("wrong-pass-1", hashes[1]))[0]
