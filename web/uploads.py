"""Multipart uploads with limits: how many files, how many bytes each (the whole body is capped
by ``web.app.BodyLimit``). Photos' types are checked later by decoding them, never by name."""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.config import Config

MAX_FIELDS = 10  # name, force, csrf_token, ...: a form with more is not ours


async def limited_form(request: Request, cfg: Config) -> FormData:
    """The request's multipart form, parsed once with this app's limits (cached)."""
    cached = getattr(request.state, "upload_form", None)
    if cached is not None:
        return cached
    try:
        form = await request.form(
            max_files=cfg.upload_max_files, max_fields=MAX_FIELDS, max_part_size=64_000
        )
    except StarletteHTTPException as exc:  # Starlette's "Too many files" and the like
        raise HTTPException(413 if "many" in str(exc.detail) else 400, str(exc.detail)) from None
    request.state.upload_form = form
    return form


async def read_files(form: FormData, field: str, cfg: Config) -> list[tuple[str, bytes]]:
    """``(file name, bytes)`` of each file in ``field``; a file over ``upload_max_bytes`` is
    kept as its first ``upload_max_bytes + 1`` bytes, so the enrolment names it as too large."""
    files = []
    for item in form.getlist(field):
        if not isinstance(item, UploadFile):
            raise HTTPException(400, f"{field}: expected files, got a text field")
        data = await item.read(cfg.upload_max_bytes + 1)
        files.append((item.filename or "photo", data))
    return files


def text_field(form: FormData, field: str, default: str = "") -> str:
    value = form.get(field, default)
    if not isinstance(value, str):
        raise HTTPException(400, f"{field}: expected text, got a file")
    return value
