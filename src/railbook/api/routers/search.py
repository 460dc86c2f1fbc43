"""HTTP endpoints: search and seat maps (API.md, "Search"); no login needed."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from railbook.api.schemas_search import (
    CarriageOut,
    SeatClass,
    SeatMapOut,
    SeatOut,
    SeatRowOut,
    TrainOfferOut,
)
from railbook.bootstrap import Container
from railbook.domain.pricing import yuan_text
from railbook.services.search import (
    SearchAnswer,
    SearchQuery,
    SearchService,
    check_term,
    parse_clock,
    parse_kinds,
)

router = APIRouter(prefix="/api/v1", tags=["search"])

STALE_HEADER = "X-Railbook-Stale"
Term = Annotated[str, Query(min_length=1, max_length=64, description="Station name, telegraph code or city.")]
Clock = Annotated[str | None, Query(max_length=5, description="HH:MM")]


def search_service(request: Request) -> SearchService:
    """The process's search service, read straight off the app: a plain-function dependency would
    cost every search a thread-pool hop (FastAPI runs sync dependencies in worker threads)."""
    container: Container = request.app.state.container
    service: SearchService = container.parts["search"]
    return service


def encode_offers(answer: SearchAnswer) -> bytes:
    """The body of ``list[TrainOfferOut]`` as FastAPI would render it, built straight from the
    answer: the hottest answers are encoded once per hot entry instead of validated and serialised
    by pydantic on every request (``tests/api/test_search.py`` holds the two equal)."""
    return json.dumps(
        [
            {
                "train_code": o.train_code,
                "date": o.date.isoformat(),
                "from": {"station": o.from_station, "departs": o.departs, "index": o.from_index},
                "to": {"station": o.to_station, "arrives": o.arrives, "index": o.to_index},
                "duration_minutes": o.duration_minutes,
                "seats": {
                    cls: {"remaining": s.remaining, "price": yuan_text(s.price_fen)}
                    for cls, s in o.seats.items()
                },
            }
            for o in answer.offers
        ],
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    ).encode()


@router.get(
    "/trains/search",
    response_model=list[TrainOfferOut],
    response_model_by_alias=True,
    responses={
        404: {"description": "STATION_NOT_FOUND"},
        422: {"description": "VALIDATION_ERROR, SAME_STATION or DATE_NOT_ON_SALE"},
    },
)
async def search_trains(
    request: Request,
    from_: Annotated[
        str,
        Query(alias="from", min_length=1, max_length=64, description="Station name, telegraph code or city."),
    ],
    to: Term,
    date: dt.date,
    kind: Annotated[str | None, Query(max_length=32, description="Train kinds, e.g. G,D")] = None,
    depart_after: Clock = None,
    depart_before: Clock = None,
) -> Response:
    """Trains between two stations (or cities) on a day, by departure, with seats left and prices.
    ``X-Railbook-Stale: 1`` marks counts read from the system of record while the cache was down."""
    query = SearchQuery(
        from_term=check_term(from_, "from"),
        to_term=check_term(to, "to"),
        date=date,
        kinds=parse_kinds(kind),
        depart_after=parse_clock(depart_after, "depart_after"),
        depart_before=parse_clock(depart_before, "depart_before"),
    )
    body, stale = await search_service(request).search_encoded(query, encode_offers)
    return Response(body, media_type="application/json", headers={STALE_HEADER: "1"} if stale else None)


@router.get(
    "/trains/{code}/seat-map",
    response_model=SeatMapOut,
    responses={
        404: {"description": "TRAIN_NOT_FOUND or STATION_NOT_FOUND"},
        422: {"description": "VALIDATION_ERROR, SEAT_CLASS_NOT_ON_TRAIN, STATION_NOT_ON_TRAIN"},
    },
)
async def seat_map(
    request: Request,
    response: Response,
    code: Annotated[str, Path(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9]+$")],
    date: dt.date,
    from_: Annotated[str, Query(alias="from", min_length=1, max_length=64)],
    to: Term,
    seat_class: SeatClass,
) -> SeatMapOut:
    """Every seat of a class, free or taken for the journey from → to (free: no sold segment overlaps)."""
    answer = await search_service(request).seat_map(
        code.upper(), date, check_term(from_, "from"), check_term(to, "to"), seat_class
    )
    if answer.stale:
        response.headers[STALE_HEADER] = "1"
    return SeatMapOut(
        carriages=[
            CarriageOut(
                carriage=f"{carriage:02d}",
                rows=[
                    SeatRowOut(row=row, seats=[SeatOut(seat=cell.name, free=cell.free) for cell in cells])
                    for row, cells in rows
                ],
            )
            for carriage, rows in answer.carriages
        ]
    )
