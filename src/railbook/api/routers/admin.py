"""HTTP endpoints: admin (API.md "Admin"). Members without the admin role get 404, as if nothing were here."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from railbook.api.deps import ContainerDep, require_admin
from railbook.api.schemas_admin import (
    BlockIn,
    BlockOut,
    InventoryOut,
    SaleOpenIn,
    SaleOpenOut,
    StationIn,
    StationOut,
    TrainIn,
    TrainOut,
    TrainSummaryOut,
    train_out,
)
from railbook.kit.clock import beijing_today
from railbook.services.catalog import stations, trains
from railbook.services.members import blocklist
from railbook.services.sales.inventory import day_inventory
from railbook.services.sales.opening import open_sale_days
from railbook.services.sales.window import check_on_sale

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])

TrainCode = Annotated[str, Path(min_length=1, max_length=16)]


@router.post("/stations", status_code=status.HTTP_201_CREATED, response_model=StationOut)
async def create_station(body: StationIn, container: ContainerDep) -> StationOut:
    """Add a station; 409 STATION_EXISTS when its name or telegraph code is taken."""
    view = await stations.create_station(
        container, name=body.name, code=body.code, pinyin=body.pinyin, city=body.city
    )
    return StationOut.model_validate(view)


@router.get("/stations", response_model=list[StationOut])
async def list_stations(
    container: ContainerDep, q: Annotated[str | None, Query(max_length=32)] = None
) -> list[StationOut]:
    """Stations whose name, telegraph code or pinyin starts with ``q``."""
    return [StationOut.model_validate(v) for v in await stations.find_stations(container, q)]


@router.post(
    "/trains", status_code=status.HTTP_201_CREATED, response_model=TrainOut, response_model_exclude_none=True
)
async def create_train(body: TrainIn, container: ContainerDep) -> TrainOut:
    """Publish a whole train atomically (stops, carriages, generated seats); 409 TRAIN_EXISTS."""
    return train_out(await trains.create_train(container, body.to_spec()))


@router.get("/trains", response_model=list[TrainSummaryOut])
async def list_trains(container: ContainerDep) -> list[TrainSummaryOut]:
    """Every published train: code, kind, first and last station, number of stops."""
    return [TrainSummaryOut.model_validate(v) for v in await trains.list_trains(container)]


@router.get("/trains/{code}", response_model=TrainOut, response_model_exclude_none=True)
async def get_train(code: TrainCode, container: ContainerDep) -> TrainOut:
    """A train as published."""
    return train_out(await trains.get_train(container, code))


@router.put("/trains/{code}", response_model=TrainOut, response_model_exclude_none=True)
async def replace_train(code: TrainCode, body: TrainIn, container: ContainerDep) -> TrainOut:
    """Replace a train; days already open keep their copy, days opened afterwards use this one."""
    return train_out(await trains.replace_train(container, code, body.to_spec()))


@router.delete("/trains/{code}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_train(code: TrainCode, container: ContainerDep) -> Response:
    """Remove a train; 409 TRAIN_ON_SALE while any of its days from today on is open."""
    await trains.delete_train(container, code, today=beijing_today())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/sales/open", response_model=SaleOpenOut)
async def open_sales(body: SaleOpenIn, container: ContainerDep) -> SaleOpenOut:
    """Open sale days inside the sale window; idempotent (a repeat opens only what is missing)."""
    dates = body.dates()
    check_on_sale(container.settings, dates)
    return SaleOpenOut.model_validate(await open_sale_days(container, dates))


@router.get("/trains/{code}/inventory", response_model=InventoryOut)
async def inventory(
    code: TrainCode, container: ContainerDep, date: Annotated[dt.date, Query()]
) -> InventoryOut:
    """Sold segments and remaining seats of every station pair, from the system of record."""
    return InventoryOut.model_validate(await day_inventory(container, code, date))


@router.post("/blocklist", status_code=status.HTTP_201_CREATED, response_model=BlockOut)
async def add_block(body: BlockIn, container: ContainerDep) -> BlockOut:
    """Block a mobile or a client address (or network) at login and on orders, until ``until``."""
    view = await blocklist.add_block(
        container, mobile=body.mobile, ip=body.ip, reason=body.reason, until=body.until
    )
    return BlockOut.model_validate(view, from_attributes=True)


@router.get("/blocklist", response_model=list[BlockOut])
async def list_blocks(container: ContainerDep) -> list[BlockOut]:
    """Every entry, newest first; ``active`` says whether it blocks now."""
    return [BlockOut.model_validate(v, from_attributes=True) for v in await blocklist.list_blocks(container)]


@router.delete(
    "/blocklist/{block_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "BLOCK_NOT_FOUND"}},
)
async def remove_block(
    block_id: Annotated[int, Path(ge=1, le=2**63 - 1)], container: ContainerDep
) -> Response:
    """Lift a block; 404 BLOCK_NOT_FOUND for an unknown id."""
    await blocklist.remove_block(container, block_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
