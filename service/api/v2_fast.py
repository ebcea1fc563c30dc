"""The v2 HTTP inference route served straight from ASGI, before FastAPI's router.

`POST /v2/models/{name}[/versions/{version}]/infer` is the hot path of tritonclient and perf_analyzer.
FastAPI's per-request routing, dependency solving and response objects cost more than the rest of the
request on a small model, so this middleware answers it with the same `handle_infer` the documented
FastAPI route uses, with raw ASGI messages. Request ids, limits and authentication (the outer middlewares)
apply as to every route; errors are the same JSON answers.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.v2_http import handle_infer
from service.errors import BadRequest, PayloadTooLarge, ServiceError
from service.request_context import send_error
from service.v2.codec import HEADER_LENGTH

INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


class V2InferFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = INFER_PATH.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        header_length = None
        for key, value in scope["headers"]:
            if key == HEADER_LENGTH.encode():
                header_length = value.decode("latin-1")
        version = unquote(match[2]) if match[2] else None
        limit = state.settings.max_request_bytes

        async def read() -> bytes:
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise BadRequest("client disconnected while sending the body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
                more = message.get("more_body", False)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)

        try:
            content, headers = await handle_infer(state, unquote(match[1]), version, read, header_length)
        except ServiceError as exc:
            await send_error(scope, receive, send, exc.status_code, exc.message, exc.headers)
            return
        raw_headers = [(b"content-length", str(len(content)).encode())]
        raw_headers += [(key.lower().encode(), value.encode()) for key, value in headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        await send({"type": "http.response.body", "body": content})
