"""Adds the REST API to Chainlit's FastAPI app, so one process serves the chat and the API
(and holds the embedded Qdrant store, which allows one process per folder).

Chainlit 2.12 ends its routes with a catch-all `GET /{full_path:path}` serving the UI, and
routes match in order: ours are put first (none of their paths is one of Chainlit's). The
OpenAPI schema (`/openapi.json`, docs at `/docs`) lists only the API routes.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from python_multipart.multipart import MultipartParser, parse_options_header

from api.disconnect import ClientDisconnectedError
from api.routes import chat, documents, feedback, openai, qlora, summarize, system
from core.models import ModelNotFoundError
from core.settings import get_settings
from core.store import StoreUnavailableError
from services.admission import ServerBusyError
from services.assistant import ModelLoadError
from services.conversation import AnswerFailedError, InvalidAskError, ModelNotLoadedError
from services.feedback import UnknownAnswerError
from services.jobs import InvalidTrainingRequestError, JobConflictError, UnknownJobError
from services.paths import PathNotAllowedError
from services.uploads import UploadRejectedError, accepted_types_text

log = logging.getLogger(__name__)

TITLE = "FCC regulatory-document assistant API"
DESCRIPTION = """
Questions answered from the indexed FCC documents with numbered sources, a QLoRA service
(load, train, hot-swap adapters), document upload, feedback, and an OpenAI-compatible
endpoint. The chat UI is at `/`.

**API key**: when the server has `API_KEY` set, every `/api` and `/v1` route requires
`Authorization: Bearer <key>` or `X-API-Key: <key>`, except `GET /api/health` (the chat's
login asks for the same key). Cross-origin browser calls are refused unless their origin is
listed in `CORS_ORIGINS`.
"""
_INSTALLED = "_fcc_rag_api_installed"


def api_router() -> APIRouter:
    router = APIRouter()
    for module in (system, chat, summarize, qlora, documents, feedback, openai):
        if hasattr(module, "open_router"):
            router.include_router(module.open_router)
        router.include_router(module.router)
    return router


def _error(status_code: int):
    async def handler(_request: Request, error: Exception) -> JSONResponse:
        detail = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        return JSONResponse({"detail": detail}, status_code=status_code)

    return handler


async def _upload_error(_request: Request, error: UploadRejectedError) -> JSONResponse:
    body = {"detail": str(error)}
    if error.status_code == 415:
        body["accepted_types"] = accepted_types_text().split(", ")
    return JSONResponse(body, status_code=error.status_code)


async def _unknown_job(_request: Request, error: UnknownJobError) -> JSONResponse:
    return JSONResponse({"detail": f"No training job {error.args[0]!r}."}, status_code=404)


async def _busy(_request: Request, error: ServerBusyError) -> JSONResponse:
    return JSONResponse(
        {"detail": str(error)},
        status_code=429,
        headers={"Retry-After": str(error.retry_after_s)},
    )


async def _disconnected(_request: Request, _error: ClientDisconnectedError) -> Response:
    return Response(status_code=499)  # nginx's "client closed request": nobody reads it


def add_error_handlers(app: FastAPI) -> None:
    from chains.llm import AdapterError

    app.add_exception_handler(PathNotAllowedError, _error(400))
    app.add_exception_handler(InvalidTrainingRequestError, _error(400))
    app.add_exception_handler(AdapterError, _error(400))
    app.add_exception_handler(ModelNotFoundError, _error(400))
    app.add_exception_handler(ModelLoadError, _error(400))
    app.add_exception_handler(ModelNotLoadedError, _error(409))
    app.add_exception_handler(JobConflictError, _error(409))
    app.add_exception_handler(UnknownJobError, _unknown_job)
    app.add_exception_handler(UnknownAnswerError, _error(404))
    app.add_exception_handler(UploadRejectedError, _upload_error)
    app.add_exception_handler(StoreUnavailableError, _error(503))
    app.add_exception_handler(AnswerFailedError, _error(500))
    app.add_exception_handler(InvalidAskError, _error(422))
    app.add_exception_handler(ServerBusyError, _busy)
    app.add_exception_handler(ClientDisconnectedError, _disconnected)
    openai.use_error_objects(app)  # last: on /v1 every handler's answer is an OpenAI error object


MB = 1024 * 1024
# Upload routes -> how many files one request may carry: our API's and the chat's (Chainlit).
UPLOAD_ROUTES = {"/api/ingest": documents.MAX_FILES_PER_REQUEST, "/project/file": 1}


class _BodyTooLarge(Exception):
    pass


def _files(count: int) -> str:
    return "one file" if count == 1 else f"{count} files"


class _UploadCounter:
    """Counts an upload body as it arrives: the whole body, and each multipart part (one
    file) when the body is multipart. `feed` returns the reason once a limit is passed."""

    def __init__(self, content_type: bytes, per_file: int, total: int, max_files: int):
        self.per_file, self.total, self.max_files = per_file, total, max_files
        self.received = 0
        self.part = 0
        self.parser = None
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind == b"multipart/form-data" and boundary:
            callbacks = {"on_part_begin": self._part_begin, "on_part_data": self._part_data}
            self.parser = MultipartParser(boundary, callbacks)
        self.problem: str | None = None

    def _part_begin(self) -> None:
        self.part = 0

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self.part += end - start
        if self.part > self.per_file and self.problem is None:
            self.problem = (
                f"A file of this upload is over MAX_UPLOAD_MB={self.per_file // MB} MB; "
                "nothing was stored."
            )

    def feed(self, chunk: bytes) -> str | None:
        self.received += len(chunk)
        if self.received > self.total:
            self.problem = self.problem or (
                f"The upload passed {self.total // MB} MB; at most {_files(self.max_files)} of "
                f"MAX_UPLOAD_MB={self.per_file // MB} MB each are accepted; nothing was stored."
            )
        if self.parser is not None and self.problem is None:
            try:
                self.parser.write(chunk)
            except Exception:  # a malformed body: the route's own parser reports it
                self.parser = None
        return self.problem


class UploadSizeLimit:
    """413 for an upload body over the limit, as soon as it passes it.

    A declared Content-Length over the request limit is refused before anything is read.
    A body without one (chunked) or one that lies is counted as it arrives, file by file;
    once a file passes MAX_UPLOAD_MB (or the body passes MAX_FILES x MAX_UPLOAD_MB), reading
    stops, the route's own answer is dropped and the client gets 413: nothing is stored."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in UPLOAD_ROUTES:
            await self.app(scope, receive, send)
            return
        max_files = UPLOAD_ROUTES[scope["path"]]
        per_file = get_settings().max_upload_mb * MB
        limit = per_file * max_files + MB  # + room for the multipart framing
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            detail = (
                f"The upload is {int(length) / MB:.0f} MB; at most {_files(max_files)} of "
                f"MAX_UPLOAD_MB={per_file // MB} MB each are accepted."
            )
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        counter = _UploadCounter(headers.get(b"content-type", b""), per_file, limit, max_files)
        started = False

        async def counted_receive():
            if counter.problem:
                raise _BodyTooLarge(counter.problem)
            message = await receive()
            if message["type"] == "http.request" and counter.feed(message.get("body", b"")):
                raise _BodyTooLarge(counter.problem)
            return message

        async def guarded_send(message):
            nonlocal started
            if counter.problem:
                return  # the route's answer to a body cut short
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not counter.problem:
                raise
        if counter.problem and not started:
            log.warning("Upload refused (%s bytes read): %s", counter.received, counter.problem)
            # Connection: close, so the client stops sending the rest of the body.
            response = JSONResponse(
                {"detail": counter.problem}, status_code=413, headers={"Connection": "close"}
            )
            await response(scope, receive, send)


# CORS -------------------------------------------------------------------------------------------


def apply_cors(app: FastAPI, origins: list[str]) -> None:
    """Allow exactly these origins cross-origin (none: same-origin only), for the HTTP routes
    (Chainlit's CORSMiddleware, configured here instead of in .chainlit/config.toml) and the
    chat's Socket.IO connection (which otherwise accepts any Origin)."""
    from starlette.middleware.cors import CORSMiddleware

    for middleware in app.user_middleware:
        if middleware.cls is CORSMiddleware:
            middleware.kwargs["allow_origins"] = list(origins)
    app.middleware_stack = None  # rebuilt with these on the next request
    try:
        from chainlit.server import sio
    except ImportError:  # not Chainlit's app
        return
    sio.eio.cors_allowed_origins = socket_origin_check(origins)


def socket_origin_check(origins: list[str]):
    allowed = set(origins)

    def check(origin: str | None, environ: dict) -> bool:
        if not origin or origin in allowed or "*" in allowed:
            return True
        host = environ.get("HTTP_HOST", "")
        return bool(host) and origin in (f"http://{host}", f"https://{host}")  # same origin

    return check


def install(app: FastAPI) -> FastAPI:
    """Add the API routes (before the UI catch-all), error handlers and the OpenAPI schema."""
    if getattr(app.state, _INSTALLED, False):
        return app
    routes = app.router.routes
    before = len(routes)
    app.include_router(api_router())
    added = routes[before:]
    del routes[before:]
    routes[0:0] = added  # first: our paths never collide with Chainlit's, its catch-all comes last
    add_error_handlers(app)
    app.add_middleware(UploadSizeLimit)
    apply_cors(app, get_settings().cors_origin_list)

    app.title, app.description, app.version = TITLE, DESCRIPTION, _app_version()

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(
                title=TITLE, version=app.version, description=DESCRIPTION, routes=added
            )
        return app.openapi_schema

    app.openapi = openapi
    setattr(app.state, _INSTALLED, True)
    return app


def _app_version() -> str:
    return system.versions().get("app") or "0"
