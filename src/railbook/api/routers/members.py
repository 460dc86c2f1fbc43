"""HTTP endpoints: members (API.md)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Path, Request, Response, status
from pydantic_core import to_json

from railbook.api.deps import ContainerDep, MemberDep, issue_token
from railbook.api.schemas_members import (
    CaptchaOut,
    LoginIn,
    MeOut,
    PassengerIn,
    PassengerOut,
    PassengerType,
    RegisterIn,
    RegisterOut,
    TokenOut,
)
from railbook.services.members import service as members
from railbook.services.members.antibot import CaptchaAnswer, new_challenge

router = APIRouter(prefix="/api/v1", tags=["members"])


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, response_model=RegisterOut)
async def register(body: RegisterIn, container: ContainerDep) -> RegisterOut:
    """Open an account; 409 MOBILE_TAKEN if the mobile has one."""
    member_id = await members.register(container, mobile=body.mobile, password=body.password, name=body.name)
    return RegisterOut(member_id=member_id)


def client_address(request: Request) -> str:
    """The client's address: the direct peer. Behind a reverse proxy, the server is started with
    the proxy's address in ``--forwarded-allow-ips`` (uvicorn's proxy headers), so the peer is the
    address the proxy forwarded, not the proxy's own."""
    return request.client.host if request.client else ""


@router.post(
    "/auth/login",
    response_model=TokenOut,
    responses={
        403: {"description": "BLOCKED, or CAPTCHA_REQUIRED after too many failed logins"},
    },
)
async def login(body: LoginIn, request: Request, container: ContainerDep) -> TokenOut:
    """Exchange mobile and password for a bearer token; 401 BAD_CREDENTIALS otherwise. After 5 failed
    logins of a mobile in 15 minutes (or 20 from one address): 403 CAPTCHA_REQUIRED until retried
    with ``captcha_id`` and ``captcha_answer``; a blocked mobile or address: 403 BLOCKED."""
    captcha = None
    if body.captcha_id is not None and body.captcha_answer is not None:
        captcha = CaptchaAnswer(body.captcha_id, body.captcha_answer)
    member_id, role = await members.authenticate(
        container,
        mobile=body.mobile,
        password=body.password,
        address=client_address(request),
        captcha=captcha,
    )
    token, lifetime = issue_token(container, member_id, role)
    return TokenOut(access_token=token, expires_in=lifetime)


@router.get("/captcha", response_model=CaptchaOut)
async def captcha(container: ContainerDep) -> CaptchaOut:
    """A new captcha: its id and a PNG data URL. Its answer (4 characters, case-insensitive) is
    checked once, right or wrong, and expires after a few minutes."""
    challenge = await new_challenge(container)
    return CaptchaOut(captcha_id=challenge.captcha_id, image=challenge.image)


@router.get("/me", response_model=MeOut)
async def me(principal: MemberDep, container: ContainerDep) -> Response:
    """The logged-in member (``MeOut``'s fields in its order, serialised as FastAPI does: the same
    bytes without validating a model per request)."""
    view = await members.get_member(container, principal.member_id)
    body = {"member_id": view.member_id, "mobile": view.mobile, "name": view.name, "role": view.role}
    return Response(content=to_json(body), media_type="application/json")


def _passenger_out(view: members.PassengerView) -> PassengerOut:
    kind = cast(PassengerType, view.type)  # the domain stores only the four passenger types
    return PassengerOut(
        passenger_id=view.passenger_id, name=view.name, id_card_masked=view.id_card_masked, type=kind
    )


@router.post("/passengers", status_code=status.HTTP_201_CREATED, response_model=PassengerOut)
async def add_passenger(body: PassengerIn, principal: MemberDep, container: ContainerDep) -> PassengerOut:
    """Add a traveller; 422 on a bad ID number, 409 PASSENGER_EXISTS / PASSENGER_LIMIT."""
    view = await members.add_passenger(
        container, principal.member_id, name=body.name, id_card=body.id_card, passenger_type=body.type
    )
    return _passenger_out(view)


@router.get("/passengers", response_model=list[PassengerOut])
async def list_passengers(principal: MemberDep, container: ContainerDep) -> list[PassengerOut]:
    """The member's travellers, ID numbers masked."""
    return [_passenger_out(v) for v in await members.list_passengers(container, principal.member_id)]


@router.delete("/passengers/{passenger_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_passenger(
    passenger_id: Annotated[int, Path(ge=1, le=2**63 - 1)], principal: MemberDep, container: ContainerDep
) -> Response:
    """Remove a traveller; someone else's is 404; 409 PASSENGER_HAS_TICKETS while they hold an unpaid or
    paid ticket for a journey not yet made."""
    await members.delete_passenger(container, principal.member_id, passenger_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
