"""Service errors carry their HTTP status, so every layer raises one type and the API maps it once."""

from __future__ import annotations


class ServiceError(Exception):
    """An error the client should see, with the HTTP status that describes it."""

    status_code = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServiceError):
    status_code = 400
    grpc_code = "INVALID_ARGUMENT"


class ModelNotFound(ServiceError):
    status_code = 404
    grpc_code = "NOT_FOUND"


class PayloadTooLarge(ServiceError):
    status_code = 413
    grpc_code = "INVALID_ARGUMENT"


class RequestTimeout(ServiceError):
    """The client did not send its request (headers or body) in time."""

    status_code = 408
    grpc_code = "DEADLINE_EXCEEDED"


class Unauthenticated(ServiceError):
    status_code = 401
    grpc_code = "UNAUTHENTICATED"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status_code = 403
    grpc_code = "PERMISSION_DENIED"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    grpc_code = "INVALID_ARGUMENT"


class NotAcceptable(ServiceError):
    status_code = 406
    grpc_code = "INVALID_ARGUMENT"


class QueueFull(ServiceError):
    """The model's queue is at max_queue_size: reject now instead of queueing without bound."""

    status_code = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class NotReady(ServiceError):
    status_code = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class QueueTimeout(ServiceError):
    """The request's queue deadline passed before a batch picked it up."""

    status_code = 504
    grpc_code = "DEADLINE_EXCEEDED"


class BackendFailure(ServiceError):
    status_code = 500
    grpc_code = "INTERNAL"


class BadGateway(ServiceError):
    """A remote backend failed or could not be reached."""

    status_code = 502
    grpc_code = "UNAVAILABLE"


class GatewayTimeout(ServiceError):
    """A remote backend did not answer in time."""

    status_code = 504
    grpc_code = "DEADLINE_EXCEEDED"


class Overloaded(ServiceError):
    """The server is at its in-flight request or memory limit: retry shortly."""

    status_code = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
