"""The app's exception handlers: every error is ``{"error": "one line"}`` with its status; no traceback reaches a
client (a 500 is logged on the server)."""

import logging

from colbert_az_pylate.serving.guard import shown_path
from colbert_az_pylate.serving.limits import ClientError

__all__ = ["add_error_handlers", "flatten_validation"]

log = logging.getLogger("colbert_az_pylate.serve")


def flatten_validation(errors: list[dict]) -> tuple[int, str]:
    """pydantic's error list as one status and one line."""
    first = errors[0] if errors else {}
    kind, loc = first.get("type", ""), [str(part) for part in first.get("loc", ())]
    where = ".".join(loc[1:] if loc[:1] == ["body"] else loc) or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "JSON decode error")
        return 400, f"the body is not valid JSON: {detail} (at character {loc[1] if len(loc) > 1 else '?'})"
    if kind == "missing" and where == "body":
        return 422, "a JSON body is required (Content-Type: application/json)"
    if isinstance(first.get("input"), bytes):
        return 422, "the body must be JSON with Content-Type: application/json"
    if kind == "extra_forbidden":
        return 422, f"unknown field {where!r}{more}; see /openapi.json for the fields"
    if kind == "missing":
        return 422, f"{where}: required field missing{more}"
    return 422, f"{where}: {first.get('msg', 'invalid value')}{more}"


def add_error_handlers(app) -> None:
    """Answer refusals, invalid bodies, unknown routes and internal errors of ``app`` (FastAPI) in one line."""
    # the [serve] extra: imported when an app is built, not with the package
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ClientError)
    async def client_error(request: Request, exc: ClientError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        status, message = flatten_validation(list(exc.errors()))
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 400 and "parsing the body" in message:
            message = "the body could not be parsed as JSON (is it UTF-8?)"
        elif exc.status_code == 404:
            message = f"no such endpoint: {shown_path(request.scope)} (see /openapi.json)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {shown_path(request.scope)} (see /openapi.json)"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("internal error in %s %s", request.method, shown_path(request.scope), exc_info=exc)
        return JSONResponse({"error": "internal error (logged on the server)"}, status_code=500)
