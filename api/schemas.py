"""Request and response bodies of the REST API (they are the OpenAPI schema too)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

RetrievalMode = Literal["hybrid", "dense", "bm25"]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


# Chat --------------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


def _require_question(messages: list[ChatMessage]) -> None:
    last = messages[-1]
    if last.role != "user":
        raise ValueError("the last message must be the question, with role 'user'")
    if not last.content.strip():
        raise ValueError("the question (the last message) must not be empty")


class GenerationOptions(BaseModel):
    max_tokens: int | None = Field(None, ge=1, le=4096, description="Max new tokens.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 = greedy.")
    top_p: float | None = Field(None, gt=0.0, le=1.0)


class ChatRequest(GenerationOptions):
    messages: list[ChatMessage] = Field(
        ...,
        min_length=1,
        description="The last message is the question (role user); earlier ones are the history.",
    )
    k: int | None = Field(
        None, ge=1, le=50, description="Chunks to retrieve (default RETRIEVAL_K)."
    )
    mode: RetrievalMode | None = Field(None, description="Retrieval mode (default RETRIEVAL_MODE).")
    stream: bool = Field(
        False, description="Stream Server-Sent Events (see the route description)."
    )

    @model_validator(mode="after")
    def _ends_with_a_question(self) -> ChatRequest:
        _require_question(self.messages)
        return self


class SourceOut(BaseModel):
    n: int = Field(..., description="The number the answer cites as [n].")
    source: str = Field(..., description="File path relative to the ingest root.")
    page: int | None = None
    section: str | None = Field(None, description="CFR section, e.g. 15.109.")
    heading: str | None = None
    score: float | None = None
    text: str = Field(..., description="The retrieved chunk text.")
    cited: bool = Field(False, description="True if the answer cites [n].")


class ChatResponse(BaseModel):
    id: str = Field(..., description="Answer id, for POST /api/feedback.")
    answer: str
    sources: list[SourceOut]
    abstained: bool = Field(
        ..., description="True when nothing relevant was found and the assistant declined."
    )
    timestamp: str
    model_info: dict[str, Any]
    standalone_question: str | None = None
    timings: dict[str, Any] = Field(default_factory=dict)
    usage: dict[str, Any] = Field(default_factory=dict)


# QLoRA service -----------------------------------------------------------------------------


class QLoRALoadRequest(BaseModel):
    model_name: str = Field(
        "", description="Base model: a local folder or id; empty = the bundled default."
    )
    lora_r: int = Field(16, ge=1, le=512)
    lora_alpha: int = Field(32, ge=1, le=1024)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(None, description="None = the preset's modules.")


class QLoRAChatRequest(BaseModel):
    message: str

    _check = field_validator("message")(_not_blank)


class QLoRAChatResponse(BaseModel):
    id: str
    answer: str
    sources: list[SourceOut]
    abstained: bool = False
    timestamp: str
    model_info: dict[str, Any]


class Conversation(BaseModel):
    prompt: str
    response: str

    _check = field_validator("prompt", "response")(_not_blank)


class TrainRequest(BaseModel):
    conversations: list[Conversation] = Field(..., min_length=1)
    output_dir: str | None = Field(
        None,
        description="Inside the checkpoints folder (relative paths are taken from there); default: a new folder per job.",
    )
    num_train_epochs: float = Field(1.0, gt=0, le=100)
    per_device_train_batch_size: int = Field(1, ge=1, le=256)
    learning_rate: float = Field(2e-4, gt=0, le=1.0)
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many steps (overrides epochs)."
    )
    base_model_name: str | None = Field(
        None, description="Base model to train on; default: the loaded one."
    )


class TrainJobOut(BaseModel):
    job_id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    step: int = 0
    total: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    epoch: float | None = None
    output_dir: str
    final_model_path: str | None = None
    train_loss: float | None = None
    error: str | None = None
    created_at: str
    finished_at: str | None = None


class QLoRAStatus(BaseModel):
    loaded: bool
    model_name: str | None = None
    adapter_path: str | None = None
    adapter: str | None = None
    device: str | None = None
    quantization: str | None = None
    lora_defaults: dict[str, Any]
    training: TrainJobOut | None = None


# Documents and feedback --------------------------------------------------------------------


class DocumentOut(BaseModel):
    source: str
    chunks: int
    doc_type: str | None = None
    title: str | None = None


class FeedbackRequest(BaseModel):
    answer_id: str = Field(..., description="The `id` of a chat answer.")
    rating: Literal[0, 1] = Field(..., description="1 = 👍, 0 = 👎")
    correction: str | None = Field(None, description="What the answer should have been.")


# OpenAI-compatible -------------------------------------------------------------------------


class OpenAIChatRequest(GenerationOptions):
    model: str | None = Field(None, description="Ignored: the loaded model answers.")
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="Only 1 is supported.")

    @model_validator(mode="after")
    def _ends_with_a_question(self) -> OpenAIChatRequest:
        _require_question(self.messages)
        return self
