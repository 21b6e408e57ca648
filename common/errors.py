"""The error tree shared by the API and the workers.

MonkeyError
├── RequestError            (the API answers with `status` and
│   │                        {"error": {type, message, param, code}})
│   ├── Unauthorized        401
│   ├── NotFound            404
│   ├── Conflict            409
│   ├── PayloadTooLarge     413
│   ├── InvalidRequest      422 (400 on the OpenAI-compatible routes, as OpenAI answers)
│   │   ├── ModelNotFound           code model_not_found (404 on the OpenAI routes)
│   │   └── UnsupportedParameter    code unsupported_parameter
│   ├── RateLimited         429 (+ Retry-After)
│   └── Unavailable         503 (+ Retry-After)
├── JobError                (a job ends `failed` with error {type, message})
│   ├── ProviderAuth            provider_auth
│   ├── ProviderRateLimited     provider_rate_limited
│   ├── ProviderUnavailable     provider_unavailable
│   ├── JobInvalid              invalid_request
│   ├── JobTimeout              timeout
│   ├── OutOfMemory             out_of_memory
│   └── ModelUnavailable        model_unavailable
├── BrokerUnavailable       a producer could not send job tasks (they stay queued for
│                           the reconciler)
│   Raised and caught inside one module each (internal signals, never answered as is):
├── ClaimLost               api.services.batch_claim: another process owns the batch now
├── LineError               api.services.batch_lines: a batch line is invalid (its code)
└── StreamCut               workers.runtimes.providers._base: a provider stream broke
"""

from __future__ import annotations

from typing import Any


class MonkeyError(Exception):
    type = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message}


class RequestError(MonkeyError):
    """`param`: the request field at fault, when one is; `code`: a machine-readable
    reason finer than `type` (OpenAI's error `param` and `code`)."""
    status = 400
    type = "bad_request"
    code: str | None = None
    retry_after: float | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        if code is not None:
            self.code = code


class Unauthorized(RequestError):
    status, type = 401, "unauthorized"


class NotFound(RequestError):
    status, type = 404, "not_found"


class Conflict(RequestError):
    status, type = 409, "conflict"


class PayloadTooLarge(RequestError):
    status, type = 413, "payload_too_large"


class InvalidRequest(RequestError):
    status, type = 422, "invalid_request"


class ModelNotFound(InvalidRequest):
    """No such model here, or its provider is not configured. The native API answers
    422; the OpenAI-compatible routes 404, as OpenAI does for a model it does not have."""
    code = "model_not_found"

    def __init__(self, message: str):
        super().__init__(message, param="model")


class UnsupportedParameter(InvalidRequest):
    """A request parameter of OpenAI's API that this server does not implement."""
    code = "unsupported_parameter"


class RateLimited(RequestError):
    status, type = 429, "rate_limited"

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(RequestError):
    status, type = 503, "unavailable"

    def __init__(self, message: str, retry_after: float = 2.0):
        super().__init__(message)
        self.retry_after = retry_after


class JobError(MonkeyError):
    """Ends a job as `failed`; `type` lands in the envelope's `error.type`."""

    type = "internal_error"


class ProviderAuth(JobError):
    type = "provider_auth"


class ProviderRateLimited(JobError):
    type = "provider_rate_limited"


class ProviderUnavailable(JobError):
    type = "provider_unavailable"


class JobInvalid(JobError):
    type = "invalid_request"


class JobTimeout(JobError):
    type = "timeout"


class OutOfMemory(JobError):
    type = "out_of_memory"


class ModelUnavailable(JobError):
    type = "model_unavailable"


class BrokerUnavailable(MonkeyError):
    type = "broker_unavailable"


__all__ = [
    "MonkeyError", "RequestError", "Unauthorized", "NotFound", "Conflict", "PayloadTooLarge",
    "InvalidRequest", "RateLimited", "Unavailable", "JobError", "ProviderAuth",
    "ProviderRateLimited", "ProviderUnavailable", "JobInvalid", "JobTimeout", "OutOfMemory",
    "ModelUnavailable", "BrokerUnavailable",
]
