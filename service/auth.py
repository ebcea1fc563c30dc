"""Optional API-key authentication (off unless `api_keys` is set): REST and v2 HTTP through the request
guard, gRPC through a server interceptor. Keys come as `Authorization: Bearer <key>` or `X-API-Key: <key>`
(gRPC metadata `authorization` / `x-api-key`), are compared in constant time, and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable

import grpc

from service.errors import Forbidden, Unauthenticated
from service.settings import ServerSettings

# gRPC methods that answer without a key unless auth_health is set (like /v2/health/* over HTTP).
GRPC_HEALTH_METHODS = ("/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady")


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    if api_key:
        return api_key.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def check_api_key(settings: ServerSettings, key: str | None) -> None:
    """Raise 401 without a key and 403 with a wrong one; every configured key is compared (constant time)."""
    if not settings.api_keys:
        return
    if key is None:
        raise Unauthenticated("this server requires an API key: send Authorization: Bearer <key> or X-API-Key")
    matched = False
    for candidate in settings.api_keys:
        matched |= hmac.compare_digest(key.encode(), candidate.encode())
    if not matched:
        raise Forbidden("the API key is not valid")


def metadata_key(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    values = {key.lower(): value for key, value in metadata or () if isinstance(value, str)}
    return presented_key(values.get("authorization"), values.get("x-api-key"))


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Refuses RPCs without a valid key with UNAUTHENTICATED / PERMISSION_DENIED before the servicer runs."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable],
                                handler_call_details: grpc.HandlerCallDetails):
        if handler_call_details.method in GRPC_HEALTH_METHODS and not self.settings.auth_health:
            return await continuation(handler_call_details)
        try:
            check_api_key(self.settings, metadata_key(handler_call_details.invocation_metadata))
        except (Unauthenticated, Forbidden) as exc:
            code = getattr(grpc.StatusCode, exc.grpc_code)
            message = exc.message

            async def refuse(request, context):
                await context.abort(code, message)

            return grpc.unary_unary_rpc_method_handler(refuse)
        return await continuation(handler_call_details)
