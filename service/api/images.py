"""Reading images from a request: multipart field `image`, a raw image body, or JSON {"images": [{"b64"}]}."""

from __future__ import annotations

import base64
import binascii

import orjson
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from service.api.schemas import ImagesRequest
from service.errors import BadRequest, PayloadTooLarge, ServiceError, UnsupportedMediaType
from service.settings import ServerSettings

IMAGE_BODY_TYPES = ("application/octet-stream",)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) anything over `limit` bytes before reading it all (the request guard
    enforces the server-wide limit and the body deadline on every body, chunked ones too)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequest("client disconnected while sending the body") from None
    return b"".join(chunks)


async def read_images(request: Request, settings: ServerSettings) -> list[bytes]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        images = await _from_multipart(request, settings)
    elif content_type.startswith("image/") or content_type in IMAGE_BODY_TYPES:
        images = [await read_body(request, settings.max_request_bytes)]
    elif content_type == "application/json":
        images = _from_json(await read_body(request, settings.max_request_bytes))
    elif not content_type:
        raise UnsupportedMediaType(
            "missing Content-Type: send multipart/form-data (field 'image'), image/*, or application/json"
        )
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}: send multipart/form-data (field 'image'), image/*, "
            "or application/json {\"images\": [{\"b64\": ...}]}"
        )
    if not images:
        raise BadRequest("the request contains no image")
    if len(images) > settings.max_images_per_request:
        raise BadRequest(f"{len(images)} images in one request; the limit is {settings.max_images_per_request}")
    return images


async def _from_multipart(request: Request, settings: ServerSettings) -> list[bytes]:
    try:
        form = await request.form(max_files=settings.max_images_per_request, max_fields=settings.max_multipart_parts,
                                  max_part_size=settings.max_request_bytes)
    except ServiceError:  # the guard's size or time limit, raised while the body streams in
        raise
    except Exception as exc:  # starlette raises MultiPartException / HTTPException for malformed bodies
        raise BadRequest(f"malformed multipart body: {getattr(exc, 'detail', exc)}") from None
    try:
        parts = form.getlist("image")
        if not parts:
            fields = ", ".join(sorted(set(form.keys()))) or "none"
            raise BadRequest(f"multipart body has no 'image' field (fields sent: {fields})")
        images = []
        for number, part in enumerate(parts, start=1):
            if not isinstance(part, UploadFile):
                raise BadRequest(f"multipart field 'image' #{number} is a text field, not a file upload")
            images.append(await part.read())
        return images
    finally:
        await form.close()


def _from_json(body: bytes) -> list[bytes]:
    try:
        payload = orjson.loads(body)  # nesting deeper than 1024 levels is refused, not recursed into
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    try:
        request = ImagesRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f'JSON body must be {{"images": [{{"b64": "..."}}]}}: {where}: {first["msg"]}') from None
    images = []
    for number, item in enumerate(request.images):
        try:
            images.append(base64.b64decode(item.b64, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest(f"images[{number}].b64 is not valid base64") from None
    return images
