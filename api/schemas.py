"""Request and response bodies of the REST API (they are the OpenAPI schema too)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from services.jobs import request_options, training_option_names

RetrievalMode = Literal["hybrid", "dense", "bm25"]
AnswerMode = Literal["verified", "extractive", "raw"]


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
    answer_mode: AnswerMode | None = Field(
        None,
        description="verified (default ANSWER_MODE): only sentences a cited passage supports; "
        "extractive: verbatim quotes, no model call; raw: the model's text unverified.",
    )


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
    text: str = Field(..., description="The evidence passage (verbatim), as the model saw it.")
    cited: bool = Field(False, description="True if the answer cites [n].")
    pinpoint: str | None = Field(None, description="Section and paragraph, e.g. § 97.215(c).")
    paragraph: str | None = None
    span: list[int] | None = Field(None, description="The passage's offsets in `context`.")
    context: str | None = Field(None, description="The chunk the passage was cut from.")


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
    answer_mode: str | None = None
    dropped: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Draft sentences the verifier removed (no supporting passage), with why.",
    )
    fallback: bool = Field(False, description="The answer quotes passages verbatim.")
    searched: dict[str, Any] = Field(default_factory=dict, description="What retrieval looked at.")


# QLoRA service -----------------------------------------------------------------------------


class QLoRALoadRequest(BaseModel):
    """Loads a base model, nothing else: LoRA and the other training options go with each
    training request (POST /api/chat/qlora/train)."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(
        "", description="Base model: a local folder or id; empty = the bundled default."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_training_options(cls, data: Any) -> Any:
        sent = sorted(set(data) & training_option_names()) if isinstance(data, dict) else []
        if sent:
            raise ValueError(
                f"{', '.join(sent)}: training options (LoRA r, alpha, dropout, target modules, "
                "...) are not taken on load; send them with POST /api/chat/qlora/train, in the "
                "training request's body"
            )
        return data


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


# The training request is generated from finetune's TrainConfig (through services.jobs): one
# field per user-facing TrainConfig field, same name, type, default, help, choices and bounds.
# Descriptions that differ for the API (its folders and defaults):
_REQUEST_DESCRIPTIONS = {
    "output_dir": "Inside the checkpoints folder (relative paths are taken from there); "
    "default: a new folder per job, named run_name or api-<timestamp>.",
    "run_name": "Name of the job's folder under the checkpoints folder when output_dir is not "
    "given (default: api-<timestamp>).",
    "base_model": "Base model to train on: a hub id, or a folder inside the data, checkpoints "
    "or cache folders; default: the loaded one.",
}


def _request_annotation(option) -> Any:
    scalar, is_list, takes_text = option.shape
    if option.choices:
        annotation = Literal[tuple(option.choices)]
    elif is_list:
        annotation = list[scalar] | str if takes_text else list[scalar]
    elif scalar is dict:
        annotation = option.annotation
    else:
        annotation = scalar  # str | Path is a string here
    return annotation | None if type(None) in get_args(option.annotation) else annotation


def _request_field(option) -> Any:
    description = _REQUEST_DESCRIPTIONS.get(option.name, option.help)
    default = option.default()
    if isinstance(default, list | dict):
        return Field(default_factory=option.default, description=description, **option.bounds)
    return Field(default, description=description, **option.bounds)


TrainRequest = create_model(
    "TrainRequest",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A training job: the conversations and finetune.config.TrainConfig's options, "
    "LoRA included (unset: the preset's values and TrainConfig's defaults).",
    __module__=__name__,
    conversations=(list[Conversation], Field(..., min_length=1)),
    **{
        option.name: (_request_annotation(option), _request_field(option))
        for option in request_options()
    },
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
