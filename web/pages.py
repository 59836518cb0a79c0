"""Server-rendered pages (Jinja2). Forms post back here with the session's CSRF token."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from common.errors import UserError
from web import queries
from web.auth import Principal, admin, viewer
from web.context import context
from web.uploads import limited_form, read_files, text_field

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
PAGE_DAY_ROWS = 500  # the Reports page shows this many day rows; downloads have them all


def render(request: Request, template: str, who: Principal, status: int = 200, **values: Any):
    ctx = context(request)
    return ctx.templates.TemplateResponse(
        request,
        template,
        {
            "principal": who,
            "csrf_token": who.csrf or "",
            "page": template.split(".")[0],
            **values,
        },
        status_code=status,
    )


@router.get("/")
async def today_page(request: Request, who: Principal = Depends(viewer)) -> Response:
    return render(request, "today.html", who, today=context(request).hub.snapshot())


@router.get("/events/today")
async def today_stream(request: Request, who: Principal = Depends(viewer)) -> Response:
    """Server-sent events: the Today snapshot now and after every change."""
    from web.auth import still_signed_in

    hub = context(request).hub

    async def allowed() -> bool:
        return await run_in_threadpool(still_signed_in, request, who)

    return StreamingResponse(
        hub.events(request.is_disconnected, allowed),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/reports")
async def reports_page(
    request: Request,
    date: str | None = None,
    start: str | None = None,
    end: str | None = None,
    name: str | None = None,
    who: Principal = Depends(viewer),
) -> Response:
    from web.reports import build, to_json

    ctx = context(request)
    today = dt.date.today()
    error = None
    report = None
    try:
        first, last = queries.date_range(date, start, end, today)
        person = queries.person_name(name) if name else None
        report = to_json(await run_in_threadpool(build, ctx.stores, first, last, person))
    except UserError as exc:
        error = str(exc)
        first = last = today
        person = None
    query = request.url.query
    return render(
        request,
        "reports.html",
        who,
        status=400 if error else 200,
        report=report,
        error=error,
        start=first.isoformat(),
        end=last.isoformat(),
        name=person or "",
        query=query,
        day_rows=PAGE_DAY_ROWS,
    )


@router.get("/reports/export.{fmt}")
async def reports_export(
    request: Request,
    fmt: str,
    date: str | None = None,
    start: str | None = None,
    end: str | None = None,
    name: str | None = None,
    view: str = "totals",
    who: Principal = Depends(viewer),
) -> Response:
    from web.reports import build, download

    if fmt not in ("csv", "xlsx") or view not in ("totals", "days"):
        return render(request, "error.html", who, status=404, message="no such export")
    first, last = queries.date_range(date, start, end, dt.date.today())
    person = queries.person_name(name) if name else None
    report = await run_in_threadpool(build, context(request).stores, first, last, person)
    return await run_in_threadpool(download, report, fmt, view)


@router.get("/people")
async def people_page(request: Request, who: Principal = Depends(viewer)) -> Response:
    found = await run_in_threadpool(queries.people, context(request).stores)
    return render(request, "people.html", who, people=found)


@router.get("/people/enrol")
async def enrol_page(request: Request, who: Principal = Depends(admin)) -> Response:
    cfg = context(request).cfg
    return render(
        request,
        "enrol.html",
        who,
        result=None,
        min_files=cfg.upload_min_files,
        max_files=cfg.upload_max_files,
        max_mb=cfg.upload_max_bytes / 1e6,
    )


@router.post("/people/enrol")
async def enrol_upload(request: Request, who: Principal = Depends(admin)) -> Response:
    ctx = context(request)
    form = await limited_form(request, ctx.cfg)
    name = queries.person_name(text_field(form, "name"))
    files = await read_files(form, "photos", ctx.cfg)
    force = text_field(form, "force", "") in ("1", "on", "true")
    log.info("%s enrols %s from %d upload(s)", who.name, name, len(files))
    result = await run_in_threadpool(ctx.enrol.enrol, name, files, force=force)
    cfg = ctx.cfg
    return render(
        request,
        "enrol.html",
        who,
        status=200 if result.enrolled else 422,
        result=dataclasses.asdict(result),
        min_files=cfg.upload_min_files,
        max_files=cfg.upload_max_files,
        max_mb=cfg.upload_max_bytes / 1e6,
    )


@router.get("/people/webcam")
async def webcam_page(request: Request, who: Principal = Depends(admin)) -> Response:
    cfg = context(request).cfg
    return render(
        request, "webcam.html", who, min_files=cfg.upload_min_files, max_files=cfg.upload_max_files
    )


@router.get("/person/{name}")
async def person_page(request: Request, name: str, who: Principal = Depends(viewer)) -> Response:
    try:
        found = await run_in_threadpool(
            queries.person, context(request).stores, name, dt.date.today()
        )
    except queries.NotFound as exc:
        return render(request, "error.html", who, status=404, message=str(exc))
    return render(request, "person.html", who, person=found)


@router.get("/person/{name}/remove")
async def remove_confirm(request: Request, name: str, who: Principal = Depends(admin)) -> Response:
    from scanner.remove_cli import footprint

    ctx = context(request)
    person = queries.person_name(name)
    found = await run_in_threadpool(footprint, ctx.cfg, person, True)
    if not found.enrolled and not found.history:
        return render(request, "error.html", who, status=404, message=f"{person!r} is not enrolled")
    return render(request, "remove.html", who, person=person, footprint=found)


@router.post("/person/{name}/remove")
async def remove(
    request: Request,
    name: str,
    confirm: str = Form("", max_length=200),
    purge: str = Form(""),
    who: Principal = Depends(admin),
) -> Response:
    from web.people import remove_person

    person = queries.person_name(name)
    if confirm.strip() != person:
        return render(
            request,
            "error.html",
            who,
            status=400,
            message=f"type the name {person!r} exactly to confirm the removal",
        )
    ctx = context(request)
    done = await run_in_threadpool(remove_person, ctx.cfg, person, purge == "on", who.name)
    await run_in_threadpool(ctx.hub.refresh)
    return render(request, "removed.html", who, done=done)


@router.get("/kiosks")
async def kiosks_page(request: Request, who: Principal = Depends(viewer)) -> Response:
    snapshot = context(request).hub.snapshot()
    return render(request, "kiosks.html", who, today=snapshot)


@router.get("/settings")
async def settings_page(request: Request, who: Principal = Depends(viewer)) -> Response:
    ctx = context(request)
    found = await run_in_threadpool(queries.settings, ctx.cfg)
    return render(request, "settings.html", who, settings=found, message=None)


@router.post("/settings")
async def settings_change(
    request: Request,
    threshold: str = Form("", max_length=20),
    model_version: str = Form("", max_length=100),
    who: Principal = Depends(admin),
) -> Response:
    from web.people import change_settings

    ctx = context(request)
    try:
        value = float(threshold) if threshold.strip() else None
    except ValueError:
        value = None
        threshold_error = f"threshold {threshold!r} is not a number"
    else:
        threshold_error = None
    if threshold_error:
        found = await run_in_threadpool(queries.settings, ctx.cfg)
        return render(
            request, "settings.html", who, status=400, settings=found, message=threshold_error
        )
    current = ctx.cfg
    await run_in_threadpool(
        change_settings,
        ctx,
        value if value != current.threshold else None,
        model_version if model_version and model_version != current.model_version else None,
        who.name,
    )
    return RedirectResponse("/settings", status_code=303)
