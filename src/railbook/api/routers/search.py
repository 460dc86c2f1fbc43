"""HTTP endpoints: search and seat maps (API.md, "Search"); no login needed."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import QueryParams

from railbook.api.input_patterns import STRIPPED_PREFIX, stated
from railbook.api.schemas_search import (
    TERM,
    CarriageOut,
    SearchParams,
    SeatClass,
    SeatMapOut,
    SeatOut,
    SeatRowOut,
    StationNameOut,
    TrainOfferOut,
    TransferOut,
)
from railbook.bootstrap import Container
from railbook.domain.pricing import yuan_text
from railbook.services.search.answers import SearchAnswer, TrainOffer
from railbook.services.search.query import (
    TERM_MAX_LENGTH,
    SearchQuery,
    check_term,
    parse_clock,
    parse_kinds,
)
from railbook.services.search.service import SearchService

router = APIRouter(prefix="/api/v1", tags=["search"])


class PlainRoute(APIRoute):
    """A route whose endpoint takes the bare request and returns its own response: FastAPI's parameter
    solving (which would parse and validate the query a second time) is skipped. The endpoint's
    signature, ``response_model`` and ``openapi_extra`` still document it in /openapi.json, and the
    app's exception handlers still turn its errors into the error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return handler


STALE_HEADER = "X-Railbook-Stale"
STALE_HEADERS = {STALE_HEADER: "1"}
MAX_REMEMBERED_QUERY = 2048  # bytes: two 64-character terms, percent-encoded CJK, and the rest fit
Term = Annotated[str, Query(**TERM)]
FromTerm = Annotated[str, Query(alias="from", **TERM)]


def search_service(request: Request) -> SearchService:
    """The process's search service, read straight off the app: a plain-function dependency would
    cost every search a thread-pool hop (FastAPI runs sync dependencies in worker threads)."""
    container: Container = request.app.state.container
    return container.search


def offer_json(o: TrainOffer) -> dict[str, Any]:
    """A search result in the ``TrainOfferOut`` shape (keys in its field order)."""
    boarding = o.date.isoformat()
    return {
        "train_code": o.train_code,
        "date": boarding,
        "service_date": o.service_date.isoformat(),
        "from": {"station": o.from_station, "departs": o.departs, "index": o.from_index, "date": boarding},
        "to": {
            "station": o.to_station,
            "arrives": o.arrives,
            "index": o.to_index,
            "date": o.arrival_date.isoformat(),
        },
        "duration_minutes": o.duration_minutes,
        "seats": {
            cls: {
                "remaining": s.remaining,
                "price": yuan_text(s.price_fen),
                "prices": {kind: yuan_text(fen) for kind, fen in s.fares.items()},
            }
            for cls, s in o.seats.items()
        },
    }


def encode_offers(answer: SearchAnswer) -> bytes:
    """The body of ``list[TrainOfferOut]`` as FastAPI would render it, built straight from the
    answer: the hottest answers are encoded once per hot entry instead of validated and serialised
    by pydantic on every request (``tests/api/test_search.py`` holds the two equal)."""
    return json.dumps(
        [offer_json(o) for o in answer.offers], ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode()


def _iso_date(text: str) -> dt.date | None:
    """``YYYY-MM-DD`` in ASCII digits as a date; None for anything else (left to pydantic, which takes
    more forms and words its refusals)."""
    digits = text[:4] + text[5:7] + text[8:]
    if len(text) != 10 or text[4] != "-" or text[7] != "-" or not (digits.isascii() and digits.isdigit()):
        return None
    try:
        return dt.date(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        return None


def parse_search(params: QueryParams) -> SearchQuery:
    """The search query from its parameters. The common case is checked by hand (FastAPI's
    per-parameter validation and dependency solving cost more than the hot answer itself); anything
    else goes through ``SearchParams``, so the 422 details name the same fields, types and messages."""
    get = params.get
    from_, to, date_text = get("from"), get("to"), get("date")
    kind, after, before = get("kind"), get("depart_after"), get("depart_before")
    date = _iso_date(date_text) if date_text is not None else None
    if (
        from_ is None
        or to is None
        or date is None
        or not 0 < len(from_) <= TERM_MAX_LENGTH
        or not 0 < len(to) <= TERM_MAX_LENGTH
        or (kind is not None and len(kind) > 32)
        or (after is not None and len(after) > 5)
        or (before is not None and len(before) > 5)
    ):
        try:
            checked = SearchParams.model_validate(
                {k: v for k, v in params.items() if k in SearchParams.NAMES}
            )
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]
            ) from None
        from_, to, date = checked.from_, checked.to, checked.date
        kind, after, before = checked.kind, checked.depart_after, checked.depart_before
    return SearchQuery(
        from_term=check_term(from_, "from"),
        to_term=check_term(to, "to"),
        date=date,
        kinds=parse_kinds(kind),
        depart_after=parse_clock(after, "depart_after"),
        depart_before=parse_clock(before, "depart_before"),
    )


async def search_trains(request: Request) -> Response:
    """Trains between two stations (or cities) on a day, by departure, with seats left and prices.
    ``X-Railbook-Stale: 1`` marks counts read from the system of record while the cache was down.
    The parameters (``from``, ``to``, ``date``, ``kind``, ``depart_after``, ``depart_before``) are
    read by ``parse_search``, once per distinct query string: a repeated one reuses its parsed query."""
    service = search_service(request)
    raw: bytes = request.scope.get("query_string", b"")
    query = service.parsed_queries.get(raw)
    if query is None:
        query = parse_search(request.query_params)
        if len(raw) <= MAX_REMEMBERED_QUERY:  # padded with unknown parameters: parsed, not kept
            service.remember_query(raw, query)
    body, stale = await service.search_encoded(query, encode_offers)
    return Response(body, media_type="application/json", headers=STALE_HEADERS if stale else None)


router.add_api_route(
    "/trains/search",
    search_trains,
    methods=["GET"],
    route_class_override=PlainRoute,
    response_model=list[TrainOfferOut],
    response_model_by_alias=True,
    responses={
        404: {"description": "STATION_NOT_FOUND"},
        422: {"description": "VALIDATION_ERROR, SAME_STATION or DATE_NOT_ON_SALE"},
    },
    openapi_extra={"parameters": SearchParams.openapi_parameters()},
)


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
    from_: FromTerm,
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


@router.get(
    "/stations",
    response_model=list[StationNameOut],
    responses={422: {"description": "VALIDATION_ERROR (a prefix that is not printable text)"}},
)
async def stations(
    request: Request,
    q: Annotated[
        str | None,
        Query(
            max_length=TERM_MAX_LENGTH,
            description="A prefix of a name, pinyin, initials (bjn) or telegraph code.",
            json_schema_extra=stated(pattern=STRIPPED_PREFIX),
        ),
    ] = None,
) -> list[StationNameOut]:
    """Up to 20 stations whose name, pinyin, initials or telegraph code starts with ``q``
    (case-insensitive), best first; an empty list when nothing matches or ``q`` is empty."""
    prefix = (q or "").strip()
    if not prefix:
        return []
    check_term(prefix, "q")
    found = await search_service(request).station_names(prefix)
    return [
        StationNameOut(name=s.name, code=s.code, pinyin=s.pinyin, initials=s.initials, city=s.city)
        for s in found
    ]


@router.get(
    "/trains/transfers",
    response_model=list[TransferOut],
    responses={
        404: {"description": "STATION_NOT_FOUND"},
        422: {"description": "VALIDATION_ERROR, SAME_STATION or DATE_NOT_ON_SALE"},
    },
)
async def transfers(
    request: Request,
    from_: FromTerm,
    to: Term,
    date: Annotated[dt.date, Query(description="Boarding date of the first train, YYYY-MM-DD.")],
) -> Response:
    """Journeys with one change of train at the same station, the second train leaving between
    ``TRANSFER_MIN_MINUTES`` and 6 hours after the first arrives, earliest arrival first, at most 20."""
    found = await search_service(request).transfers(check_term(from_, "from"), check_term(to, "to"), date)
    body = [
        {
            "transfer_station": t.station,
            "wait_minutes": t.wait_minutes,
            "duration_minutes": t.duration_minutes,
            "legs": [offer_json(leg) for leg in t.legs],
        }
        for t in found
    ]
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")), media_type="application/json"
    )
