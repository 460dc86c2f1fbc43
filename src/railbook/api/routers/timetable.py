"""HTTP endpoint: a train's published stop list (时刻表), public like the search it expands."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel

from railbook.api.deps import ContainerDep
from railbook.api.schemas_admin import StopOut
from railbook.services.catalog import trains

router = APIRouter(prefix="/api/v1", tags=["search"])


class TimetableOut(BaseModel):
    code: str
    kind: str
    stops: list[StopOut]


@router.get(
    "/trains/{code}/stops",
    response_model=TimetableOut,
    response_model_exclude_none=True,
    responses={404: {"description": "TRAIN_NOT_FOUND"}},
)
async def train_stops(
    code: Annotated[str, Path(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9]+$")],
    container: ContainerDep,
) -> TimetableOut:
    """Every stop of a train as published (arrival, departure, day offset, km); no login needed.
    Carriages stay with the admin view: a passenger sees seats through the seat map."""
    view = await trains.get_train(container, code.upper())
    return TimetableOut(code=view["code"], kind=view["kind"], stops=view["stops"])
