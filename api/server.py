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
from fastapi.responses import JSONResponse

from api.routes import chat, documents, feedback, openai, qlora, system
from core.models import ModelNotFoundError
from core.settings import get_settings
from core.store import StoreUnavailableError
from services.conversation import AnswerFailedError, ModelNotLoadedError
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
`Authorization: Bearer <key>` or `X-API-Key: <key>`, except `GET /api/health`.
"""
_INSTALLED = "_fcc_rag_api_installed"


def api_router() -> APIRouter:
    router = APIRouter()
    for module in (system, chat, qlora, documents, feedback, openai):
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


def add_error_handlers(app: FastAPI) -> None:
    from chains.llm import AdapterError

    app.add_exception_handler(PathNotAllowedError, _error(400))
    app.add_exception_handler(InvalidTrainingRequestError, _error(400))
    app.add_exception_handler(AdapterError, _error(400))
    app.add_exception_handler(ModelNotFoundError, _error(400))
    app.add_exception_handler(ModelNotLoadedError, _error(409))
    app.add_exception_handler(JobConflictError, _error(409))
    app.add_exception_handler(UnknownJobError, _unknown_job)
    app.add_exception_handler(UnknownAnswerError, _error(404))
    app.add_exception_handler(UploadRejectedError, _upload_error)
    app.add_exception_handler(StoreUnavailableError, _error(503))
    app.add_exception_handler(AnswerFailedError, _error(500))


class UploadSizeLimit:
    """413 for an upload body that cannot fit, before it is read and spooled to disk
    (each file is checked against MAX_UPLOAD_MB again once parsed)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/api/ingest":
            limit = (
                (get_settings().max_upload_mb * documents.MAX_FILES_PER_REQUEST + 1) * 1024 * 1024
            )
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > limit:
                detail = (
                    f"The upload is {int(length) / 1024 / 1024:.0f} MB; at most "
                    f"{documents.MAX_FILES_PER_REQUEST} files of MAX_UPLOAD_MB="
                    f"{get_settings().max_upload_mb} MB each are accepted."
                )
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
