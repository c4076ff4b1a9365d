"""The QLoRA service: load a base model or a trained adapter, chat, train in the background."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from api.auth import require_api_key
from api.disconnect import unless_disconnected
from api.schemas import (
    QLoRAChatRequest,
    QLoRAChatResponse,
    QLoRALoadRequest,
    QLoRAStatus,
    TrainJobOut,
    TrainRequest,
)
from core.adapters import ADAPTER_CONFIG, is_adapter_dir
from core.settings import get_settings
from services import conversation
from services.jobs import training_jobs
from services.paths import resolve_inside, resolve_readable

router = APIRouter(
    prefix="/api/chat/qlora", tags=["qlora"], dependencies=[Depends(require_api_key)]
)

_DEFAULT_MODEL_NAMES = {"", "default"}


def check_model_name(name: str) -> str:
    """A hub id, the default, or a folder inside the data/checkpoints/cache folders."""
    name = name.strip()
    if name in _DEFAULT_MODEL_NAMES:
        return ""
    path = Path(name).expanduser()
    if path.is_absolute() or name.startswith((".", "~")) or path.exists():
        settings = get_settings()
        resolved = path.resolve()
        if not resolved.is_relative_to(settings.cache_dir.resolve()):
            resolve_inside(resolved, settings=settings)
    return name


def adapter_folder(raw: str) -> Path:
    path = resolve_readable(raw)  # the checkpoints folder, or the shipped data/adapters
    if not is_adapter_dir(path):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"No adapter at {raw!r} (no {ADAPTER_CONFIG}). Train one with "
            "POST /api/chat/qlora/train and use its final_model_path.",
        )
    return path


def service_status() -> dict:
    a = conversation.assistant()
    info = a.status()
    job = training_jobs.latest()
    return {
        "loaded": a.loaded,
        "model_name": info.get("model_name") or info.get("model"),
        "adapter_path": info.get("adapter_path"),
        "adapter": info.get("adapter"),
        "device": info.get("device"),
        "quantization": info.get("quantization"),
        "training": job.to_dict() if job else None,
    }


@router.post("/load", response_model=QLoRAStatus, summary="Load a base model")
def load(body: QLoRALoadRequest):
    """Loads the base model into the chat (replacing the current one). It sets nothing for
    training: LoRA options sent here are a 422; send them with `POST /api/chat/qlora/train`."""
    name = check_model_name(body.model_name)
    conversation.assistant().load(model_name=name or None)
    return service_status()


@router.post("/load_trained", response_model=QLoRAStatus, summary="Serve a trained adapter")
def load_trained(
    adapter_path: str = Query(..., description="Adapter folder (e.g. a job's final_model_path)."),
    base_model_name: str | None = Query(None, description="Base model; default: the loaded one."),
):
    """Hot-swaps the adapter into the running chat; reloads the base only if a different
    base model is named or none is loaded."""
    path = adapter_folder(adapter_path)
    a = conversation.assistant()
    base = check_model_name(base_model_name) if base_model_name else None
    current = a.status().get("model_name") if a.loaded else None
    if not a.loaded or (base_model_name is not None and base != (current or "")):
        a.load(model_name=base or None, adapter_path=str(path))
    else:
        a.use_adapter(str(path))
    return service_status()


@router.get("/status", response_model=QLoRAStatus, summary="What is loaded; the last training job")
def qlora_status():
    return service_status()


@router.post("/chat", response_model=QLoRAChatResponse, summary="Ask the loaded model (RAG)")
async def qlora_chat(
    request: Request,
    body: QLoRAChatRequest,
    max_new_tokens: int | None = Query(None, ge=1, le=4096),
    temperature: float | None = Query(None, ge=0.0, le=2.0),
    top_p: float | None = Query(None, gt=0.0, le=1.0),
):
    """409 when no model is loaded (after `unload`)."""
    options = conversation.AskOptions(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p
    )
    answer = conversation.ask_async(body.message.strip(), None, options, require_loaded=True)
    result = await unless_disconnected(request, answer)
    answer_id = await asyncio.to_thread(conversation.record, result, "qlora")
    return conversation.response_payload(result, answer_id)


@router.post(
    "/train",
    response_model=TrainJobOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a QLoRA training job in the background",
)
def start_training(body: TrainRequest):
    """The body carries the conversations and any TrainConfig option (`finetune train`'s,
    LoRA r/alpha/dropout/target modules included; unset: the preset's values and the
    defaults). 409 while another job runs. The job trains in a child process (one per GPU
    with TRAINING_GPUS; `processes` says how many), so the server keeps answering. Poll
    `GET /api/chat/qlora/train/{job_id}`; cancel with `DELETE`; a run whose memory estimate
    exceeds what the device has free fails before its first step, saying what to lower.
    When it has succeeded, `POST /api/chat/qlora/load_trained?adapter_path=<final_model_path>`."""
    settings = get_settings()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = body.output_dir or body.run_name or f"api-{stamp}"
    output_dir = resolve_inside(folder, settings=settings)
    params = body.model_dump(exclude_unset=True, exclude={"conversations", "output_dir"})
    base = params.get("base_model")
    if base is None and conversation.assistant().loaded:
        base = conversation.assistant().status().get("model_name")
    if base:
        params["base_model"] = check_model_name(base) or None
    conversations = [(c.prompt, c.response) for c in body.conversations]
    return training_jobs.start(conversations, output_dir, params).to_dict()


@router.get("/train/{job_id}", response_model=TrainJobOut, summary="A training job's progress")
def training_progress(job_id: str):
    return training_jobs.get(job_id).to_dict()


@router.delete("/train/{job_id}", response_model=TrainJobOut, summary="Cancel a training job")
def cancel_training(job_id: str):
    """Stops the job's processes (SIGTERM, then SIGKILL after 10 s); its state becomes
    `cancelled` and its run folder stays. A job that has already finished is returned as is."""
    return training_jobs.cancel(job_id).to_dict()


@router.post("/unload", response_model=QLoRAStatus, summary="Free the model")
def unload():
    conversation.assistant().unload()
    return service_status()
