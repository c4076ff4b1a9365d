"""Health and status."""

from __future__ import annotations

import importlib.metadata
import platform

from fastapi import APIRouter, Depends

from api.auth import require_api_key
from services.admission import answer_slots
from services.conversation import assistant

open_router = APIRouter(prefix="/api", tags=["system"])
router = APIRouter(prefix="/api", tags=["system"], dependencies=[Depends(require_api_key)])

_PACKAGES = ("torch", "transformers", "peft", "chainlit", "qdrant-client")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in (*_PACKAGES, "fcc-rag"):
        try:
            found["app" if name == "fcc-rag" else name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


@open_router.get("/health", summary="Liveness (never needs the API key)")
async def health() -> dict[str, str]:
    # async: answered on the event loop, never waiting for a worker thread behind busy routes.
    return {"status": "ok"}


@router.get("/status", summary="Model, adapter, device, collection, chunk count, versions")
def status() -> dict:
    a = assistant()
    info = a.status()
    try:
        info["chunks"] = a.retriever().count()
    except Exception as error:  # the status still answers when the store does not
        info["chunks"], info["store_error"] = None, str(error)
    return {**info, "answers": answer_slots.status(), "versions": versions()}
