"""Reading images out of requests: multipart uploads or JSON with base64 images.

Parsing is done by hand (not by FastAPI parameters) so one route can take both encodings
and every mistake gets the service's error shape with a message naming the right field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from flowerclf.serving.errors import ApiError, clean_validation_errors
from flowerclf.serving.images import decode_base64

MULTIPART = "multipart/form-data"
JSON = "application/json"
ModelT = TypeVar("ModelT", bound=BaseModel)
MAX_FORM_PARTS = 1000


@dataclass
class Upload:
    data: bytes
    filename: str | None


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def unsupported_media_type(got: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type {got or '(none)'} is not accepted; send {' or '.join(accepted)}",
        {"accepted_content_types": accepted},
    )


async def _form(request: Request) -> FormData:
    try:
        return await request.form(max_files=MAX_FORM_PARTS, max_fields=MAX_FORM_PARTS)
    except HTTPException as exc:  # malformed multipart body
        raise ApiError(422, "validation_error", f"invalid multipart body: {exc.detail}") from None
    except (ValueError, KeyError, AssertionError) as exc:
        raise ApiError(422, "validation_error", f"invalid multipart body: {exc}") from None


def _field_names(form: FormData) -> list[str]:
    return sorted(set(form.keys()))


async def _read_file(value: Any, field: str) -> Upload:
    if not isinstance(value, UploadFile):
        raise ApiError(
            422, "validation_error", f"multipart field {field!r} must be a file, not a text value"
        )
    return Upload(await value.read(), value.filename)


async def parse_json(request: Request, model: type[ModelT]) -> ModelT:
    body = await request.body()
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(422, "validation_error", f"request body is not valid JSON: {exc}") from None
    except RecursionError:  # e.g. 200 KB of "[": nesting no request of ours ever has
        raise ApiError(
            422, "validation_error", "request body is not valid JSON: nested too deeply"
        ) from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = clean_validation_errors(list(exc.errors()))
        fields = ", ".join(f"{'.'.join(e['loc']) or 'body'}: {e['msg']}" for e in errors[:5])
        raise ApiError(
            422, "validation_error", f"invalid JSON body: {fields}", {"errors": errors}
        ) from None


async def single_image(request: Request, model: type[ModelT]) -> tuple[Upload, ModelT | None]:
    """The one image of a request: multipart field ``file`` or JSON field ``image``.

    Returns the upload and, for JSON requests, the validated body (for its other fields).
    """
    media_type = _media_type(request)
    if media_type == MULTIPART:
        form = await _form(request)
        try:
            if "file" not in form:
                raise ApiError(
                    422,
                    "validation_error",
                    "multipart field 'file' is required (got fields: "
                    f"{_field_names(form) or 'none'})",
                )
            if len(form.getlist("file")) > 1:
                raise ApiError(
                    422,
                    "validation_error",
                    "send exactly one 'file'; use /v1/predict/batch with 'files' for several",
                )
            return await _read_file(form["file"], "file"), None
        finally:
            await form.close()
    if media_type == JSON:
        body = await parse_json(request, model)
        return Upload(decode_base64(body.image), None), body  # type: ignore[attr-defined]
    raise unsupported_media_type(media_type, [MULTIPART, JSON])


async def many_images(request: Request, max_count: int) -> list[Upload]:
    """The images of a batch request: multipart field ``files``, repeated."""
    media_type = _media_type(request)
    if media_type != MULTIPART:
        raise unsupported_media_type(media_type, [MULTIPART])
    form = await _form(request)
    try:
        values = form.getlist("files")
        if not values:
            raise ApiError(
                422,
                "validation_error",
                "multipart field 'files' is required, once per image (got fields: "
                f"{_field_names(form) or 'none'})",
            )
        if len(values) > max_count:
            raise ApiError(
                422,
                "too_many_files",
                f"{len(values)} files sent; at most {max_count} per request",
                {"max_files": max_count},
            )
        return [await _read_file(value, "files") for value in values]
    finally:
        await form.close()
