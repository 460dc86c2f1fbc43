"""Request dependencies: the container, a database session, the authenticated member."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, cast

import jwt
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from railbook.bootstrap import Container
from railbook.domain.errors import NotFound, Unauthorized

JWT_ALGORITHM = "HS256"


async def get_container(request: Request) -> Container:
    """Async so FastAPI calls it inline (a plain ``def`` dependency costs a worker-thread hop)."""
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_session(container: ContainerDep) -> AsyncIterator[AsyncSession]:
    """A session per request; the use case owns its transaction (``async with session.begin()``)."""
    async with container.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


@dataclass(frozen=True, slots=True)
class Principal:
    member_id: int
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def issue_token(container: Container, member_id: int, role: str) -> tuple[str, int]:
    """A signed access token and its lifetime in seconds. It goes straight into this process's cache
    of verified tokens: it was signed here, so its first request needs no signature check."""
    lifetime = container.settings.access_token_seconds
    now = dt.datetime.now(dt.UTC)
    expires = now + dt.timedelta(seconds=lifetime)
    claims = {"sub": str(member_id), "role": role, "iat": now, "exp": expires, "typ": "access"}
    token = jwt.encode(claims, container.jwt_secret, algorithm=JWT_ALGORITHM)
    _remember_verified(container, token, int(expires.timestamp()), Principal(member_id, role))
    return token, lifetime


TOKEN_CACHE_SIZE = 50_000


def decode_token(container: Container, token: str) -> Principal:
    """The token's member. A verified token is remembered until its ``exp`` (bounded cache), so a
    member's requests pay for the signature check once per token, not once per request."""
    cache = container.verified_tokens
    hit = cache.get(token)
    if hit is not None:
        if hit[0] > time.time():
            return cast(Principal, hit[1])
        del cache[token]
    try:
        claims = jwt.decode(
            token, container.jwt_secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub"]}
        )
        principal = Principal(int(claims["sub"]), str(claims.get("role", "member")))
        expires = float(claims["exp"])
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise Unauthorized("The access token is missing, invalid or expired.") from exc
    _remember_verified(container, token, expires, principal)
    return principal


def _remember_verified(container: Container, token: str, expires: float, principal: Principal) -> None:
    cache = container.verified_tokens
    if len(cache) >= TOKEN_CACHE_SIZE:
        cache.clear()
    cache[token] = (expires, principal)


async def current_principal(request: Request, container: ContainerDep) -> Principal:
    """The member behind the bearer token; 401 when it is missing, tampered with or expired."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Log in first: an `Authorization: Bearer <token>` header is required.")
    return decode_token(container, token.strip())


MemberDep = Annotated[Principal, Depends(current_principal)]


async def require_admin(principal: MemberDep) -> Principal:
    """Admins only; others get 404 so the endpoint's existence is not revealed."""
    if not principal.is_admin:
        raise NotFound("Not found.")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
