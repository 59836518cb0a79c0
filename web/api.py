"""The REST API under ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``, docs at ``/api/v1/docs``).

Reads need a viewer, changes an admin. Errors are ``{"error": "..."}`` with a fitting status.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from web import queries
from web.auth import Principal, admin, viewer
from web.context import context
from web.uploads import limited_form, read_files, text_field

log = logging.getLogger(__name__)
router = APIRouter(tags=["attendance"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class Row(BaseModel):
    name: str
    date: str
    status: str
    time: str | None
    last_seen: str | None


class EventOut(BaseModel):
    id: int
    timestamp: str
    name: str
    distance: float | None
    source: str
    action: str


class PersonOut(BaseModel):
    name: str
    crops: int
    last_seen: str | None


class PhotoVerdictOut(BaseModel):
    filename: str
    accepted: bool
    reason: str


class EnrolOut(BaseModel):
    name: str
    enrolled: bool
    message: str
    shots_saved: int
    crops: int
    photos: list[PhotoVerdictOut]
    warnings: list[str]


class RemovedOut(BaseModel):
    name: str
    photos: int
    crops: int
    embeddings: int
    attendance_rows: int
    events: int
    purged: bool


class SettingsIn(BaseModel):
    threshold: float | None = Field(None, ge=0.0, le=2.0)
    model_version: str | None = Field(None, max_length=100)


def _today() -> dt.date:
    return dt.date.today()


RANGE = {
    "date": Query(None, description="one day: YYYY-MM-DD, today or yesterday", max_length=20),
    "start": Query(None, description="first day of a range (inclusive)", max_length=20),
    "end": Query(None, description="last day of a range (inclusive)", max_length=20),
    "name": Query(None, description="one person only", max_length=200),
}


@router.get("/health", summary="Store reachability, people, kiosks")
async def health(request: Request, who: Principal = Depends(viewer)) -> dict[str, Any]:
    ctx = context(request)
    snapshot = ctx.hub.snapshot()
    return {
        "status": "ok" if not snapshot.get("error") else "degraded",
        "error": snapshot.get("error"),
        "store": "postgresql" if ctx.cfg.store else "sqlite",
        "enrolled": snapshot["counts"]["present"] + snapshot["counts"]["absent"],
        "kiosks": snapshot["counts"]["kiosks"],
        "kiosks_alive": snapshot["counts"]["kiosks_alive"],
        "live_updates": ctx.hub.version,
    }


@router.get("/today", summary="Who is present and since when, who is absent, unknown faces")
async def today(request: Request, who: Principal = Depends(viewer)) -> dict[str, Any]:
    return context(request).hub.snapshot()


@router.get("/attendance", response_model=list[Row], summary="Attendance rows")
async def attendance(
    request: Request,
    date: str | None = RANGE["date"],
    start: str | None = RANGE["start"],
    end: str | None = RANGE["end"],
    name: str | None = RANGE["name"],
    who: Principal = Depends(viewer),
) -> list[dict[str, Any]]:
    first, last = queries.date_range(date, start, end, _today())
    person = queries.person_name(name) if name else None
    rows = await run_in_threadpool(
        lambda: context(request).stores.attendance().rows(start=first, end=last, name=person)
    )
    return [queries.row_json(r) for r in rows]


@router.get("/events", response_model=list[EventOut], summary="The audit trail of sightings")
async def events(
    request: Request,
    date: str | None = RANGE["date"],
    start: str | None = RANGE["start"],
    end: str | None = RANGE["end"],
    name: str | None = RANGE["name"],
    limit: int = Query(1000, ge=1, le=100_000, description="the newest this many"),
    who: Principal = Depends(viewer),
) -> list[dict[str, Any]]:
    first, last = queries.date_range(date, start, end, _today())
    person = queries.person_name(name) if name else None
    found = await run_in_threadpool(
        lambda: (
            context(request)
            .stores.attendance()
            .events(start=first, end=last, name=person, limit=limit)
        )
    )
    return [queries.event_json(e) for e in found]


@router.get(
    "/reports",
    summary="A report for a day or a range: JSON, CSV or XLSX",
    responses={200: {"content": {"text/csv": {}, XLSX: {}}}},
)
async def report(
    request: Request,
    date: str | None = RANGE["date"],
    start: str | None = RANGE["start"],
    end: str | None = RANGE["end"],
    name: str | None = RANGE["name"],
    format: Literal["json", "csv", "xlsx"] = "json",  # noqa: A002
    view: Literal["totals", "days"] = Query(
        "totals", description="CSV only: per-person totals, or one row per person and day"
    ),
    who: Principal = Depends(viewer),
) -> Response:
    from web.reports import build, download, to_json

    first, last = queries.date_range(date, start, end, _today())
    person = queries.person_name(name) if name else None
    built = await run_in_threadpool(build, context(request).stores, first, last, person)
    if format == "json":
        return JSONResponse(await run_in_threadpool(to_json, built))
    return await run_in_threadpool(download, built, format, view)


@router.get("/people", response_model=list[PersonOut], summary="Everyone enrolled")
async def people(request: Request, who: Principal = Depends(viewer)) -> list[dict[str, Any]]:
    found = await run_in_threadpool(queries.people, context(request).stores)
    return [p.to_json() for p in found]


@router.get("/people/{name}", summary="One person: enrolment and recent history")
async def person(request: Request, name: str, who: Principal = Depends(viewer)) -> dict[str, Any]:
    try:
        return await run_in_threadpool(queries.person, context(request).stores, name, _today())
    except queries.NotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.get(
    "/people/{name}/thumbnail.png",
    summary="One of the person's aligned crops",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def thumbnail(request: Request, name: str, who: Principal = Depends(viewer)) -> Response:
    ctx = context(request)
    data = await run_in_threadpool(queries.thumbnail, ctx.cfg, ctx.stores, name)
    if data is None:
        raise HTTPException(404, f"no crop image of {name!r}")
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name", "photos"],
                    "properties": {
                        "name": {"type": "string"},
                        "photos": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        },
                        "force": {
                            "type": "boolean",
                            "description": "keep the photos although they look like "
                            "someone already enrolled",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "/people",
    response_model=EnrolOut,
    summary="Enrol a person from photos (multipart)",
    openapi_extra=_UPLOAD_DOC,
)
async def enrol(request: Request, who: Principal = Depends(admin)) -> JSONResponse:
    ctx = context(request)
    form = await limited_form(request, ctx.cfg)
    name = queries.person_name(text_field(form, "name"))
    files = await read_files(form, "photos", ctx.cfg)
    force = text_field(form, "force", "false").lower() in ("1", "true", "on", "yes")
    log.info("%s enrols %s from %d upload(s)", who.name, name, len(files))
    result = await run_in_threadpool(ctx.enrol.enrol, name, files, force=force)
    body = dataclasses.asdict(result)
    return JSONResponse(body, status_code=201 if result.enrolled else 422)


@router.post(
    "/people/check-photo",
    response_model=PhotoVerdictOut,
    summary="The enrolment quality gate on one photo or webcam frame (nothing is stored)",
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"photo": {"type": "string", "format": "binary"}},
                    }
                }
            }
        }
    },
)
async def check_photo(request: Request, who: Principal = Depends(admin)) -> dict[str, Any]:
    ctx = context(request)
    form = await limited_form(request, ctx.cfg)
    files = await read_files(form, "photo", ctx.cfg)
    if len(files) != 1:
        raise HTTPException(400, "send exactly one file in the field 'photo'")
    verdict = await run_in_threadpool(ctx.enrol.check_photo, files[0][1], files[0][0])
    return dataclasses.asdict(verdict)


@router.delete("/people/{name}", response_model=RemovedOut, summary="Remove a person everywhere")
async def remove(
    request: Request,
    name: str,
    purge: bool = Query(False, description="also delete their attendance history"),
    who: Principal = Depends(admin),
) -> dict[str, Any]:
    from web.people import remove_person

    ctx = context(request)
    found = await run_in_threadpool(remove_person, ctx.cfg, name, purge, who.name)
    return found


@router.get("/kiosks", summary="Each recogniser's last heartbeat")
async def kiosks(request: Request, who: Principal = Depends(viewer)) -> list[dict[str, Any]]:
    return context(request).hub.snapshot()["kiosks"]


@router.delete("/kiosks/{kiosk}", summary="Forget a retired kiosk")
async def forget_kiosk(request: Request, kiosk: str, who: Principal = Depends(admin)) -> dict:
    ctx = context(request)
    removed = await run_in_threadpool(lambda: ctx.stores.site().remove_kiosk(kiosk[:100]))
    if not removed:
        raise HTTPException(404, f"no kiosk called {kiosk[:100]!r}")
    await run_in_threadpool(ctx.hub.refresh)
    return {"removed": kiosk}


@router.get("/settings", summary="Threshold, calibration figures, model versions")
async def get_settings(request: Request, who: Principal = Depends(viewer)) -> dict[str, Any]:
    ctx = context(request)
    return await run_in_threadpool(queries.settings, ctx.cfg)


@router.post("/settings", summary="Change the threshold or the active model version")
async def change_settings(
    request: Request, body: SettingsIn, who: Principal = Depends(admin)
) -> dict[str, Any]:
    from web.people import change_settings as apply

    ctx = context(request)
    await run_in_threadpool(apply, ctx, body.threshold, body.model_version, who.name)
    return await run_in_threadpool(queries.settings, ctx.cfg)
