"""Request and response bodies of the REST API (they are the OpenAPI schema too)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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
    weak_match: bool = Field(
        False,
        description="The best passage is a weak match (below PASSAGE_CONFIDENT): the answer "
        "opens with a note that the closest passages may not answer the question.",
    )
    short_answer: str | None = Field(
        None,
        description="The answer in a few words from the best passage, with its pinpoint and "
        "[n] (the answer's first line), e.g. 'At most 10 W PEP (§ 97.313(j)) [1]'; null when "
        "the passage states no amount of the asked kind.",
    )
    searched: dict[str, Any] = Field(default_factory=dict, description="What retrieval looked at.")


# Summaries ---------------------------------------------------------------------------------

SummaryMode = Literal["verified", "extractive", "raw"]


class SummarizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        ..., min_length=1, description="An indexed document, e.g. 97.313.txt (GET /api/documents)."
    )
    root: str | None = Field(
        None,
        description="Its ingest root (as GET /api/documents lists it, or `uploads` / `corpus`); "
        "needed only when the name is indexed under several roots.",
    )
    mode: SummaryMode | None = Field(
        None,
        description="verified (default SUMMARY_MODE): the document's provisions quoted with "
        "their pinpoints, the model's condensed sentences only where the verifier keeps them, "
        "every line citing [n]; extractive: the quotes, no model call; raw: the model's text, "
        "unverified and uncited.",
    )

    @field_validator("source")
    @classmethod
    def _source_not_blank(cls, value: str) -> str:
        return _not_blank(value)


class SummarySourceOut(SourceOut):
    chunk_index: int | None = Field(None, description="The chunk's position in the document.")
    chunk_id: str | None = None


class SummarizeResponse(BaseModel):
    source: str | None = None
    mode: SummaryMode
    summary: str = Field(
        ...,
        description='One line per provision: `§ 97.313(b): "..." [2]` (verified, extractive); '
        "the model's text (raw).",
    )
    sources: list[SummarySourceOut] = Field(
        default_factory=list,
        description="Verified/extractive: the passages the summary cites, [n] = `n`. Raw: the "
        "chunks read (none cited).",
    )
    dropped: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Model sentences the verifier removed (and repeats), with why.",
    )
    fallback: bool = Field(
        False, description="No model sentence survived: the summary is quoted provisions."
    )
    sentences: list[dict[str, Any]] = Field(
        default_factory=list, description="Each line: text, cites, kind (quote | model), pinpoint."
    )
    timings: dict[str, float] = Field(default_factory=dict)
    chunks: int = 0
    calls: int = Field(0, description="Model calls (map + reduce).")
    levels: int = Field(0, description="Reduce rounds.")
    usage: dict[str, int] = Field(default_factory=dict)


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
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    step: int = 0
    total: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    epoch: float | None = None
    output_dir: str
    final_model_path: str | None = None
    train_loss: float | None = None
    error: str | None = None
    processes: int = Field(1, description="Training processes (one per GPU when several).")
    log_path: str | None = Field(None, description="The training process's log.")
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
    part: str | None = Field(None, description="The CFR part, where the document states one.")
    as_of: str | None = Field(
        None, description="The text's point-in-time date (eCFR), where its source states one."
    )


class FeedbackRequest(BaseModel):
    answer_id: str = Field(..., description="The `id` of a chat answer.")
    rating: Literal[0, 1] = Field(..., description="1 = 👍, 0 = 👎")
    correction: str | None = Field(None, description="What the answer should have been.")


# OpenAI-compatible -------------------------------------------------------------------------

# Request fields of OpenAI's chat completions this endpoint does not implement. Sent with a
# value that changes nothing (null, an empty list, OpenAI's default) they are accepted;
# any other value is refused with 400 `unsupported_parameter` (api/routes/openai.py words it).
OPENAI_NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "tool_choice": ("none", "auto"),
    "parallel_tool_calls": (True, False),
    "modalities": (["text"],),
    "service_tier": ("auto", "default"),
    "store": (False,),
}
# Accepted with any value, and ignored: they identify the caller, they do not shape the answer.
OPENAI_IGNORED_FIELDS = frozenset({"user", "safety_identifier", "prompt_cache_key", "metadata"})
# Chat roles whose messages are instructions: put before the assistant's own (chains.prompts).
OPENAI_INSTRUCTION_ROLES = ("system", "developer")


def _drop_neutral(data: Any, neutral: dict[str, tuple[Any, ...]], known: set[str]) -> Any:
    if not isinstance(data, dict):
        return data
    return {
        key: value
        for key, value in data.items()
        if key in known or not (value is None or value in ([], {}) or value in neutral.get(key, ()))
    }


class OpenAIMessage(BaseModel):
    """One chat message. `content` is text, or a list of text parts (joined)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str = ""
    name: str | None = Field(None, description="Ignored.")

    @model_validator(mode="before")
    @classmethod
    def _neutral_fields(cls, data: Any) -> Any:
        # A client sending back an earlier reply as is adds refusal/tool_calls/... = null.
        return _drop_neutral(data, {}, set(cls.model_fields))

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        if value is None:
            return ""
        if not isinstance(value, list):
            return value
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise PydanticCustomError(
                    "unsupported_value",
                    "only text content is supported (got a content part of type {kind})",
                    {"kind": repr(kind)},
                )
            texts.append(str(part.get("text") or ""))
        return "\n".join(texts)

    @field_validator("role", mode="before")
    @classmethod
    def _supported_role(cls, role: Any) -> Any:
        if role in ("tool", "function"):
            raise PydanticCustomError(
                "unsupported_value",
                "{role} messages are not supported: this endpoint does no function calling",
                {"role": role},
            )
        return role


class OpenAIStreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = Field(
        False, description="A last chunk with `usage` and empty `choices` before [DONE]."
    )


class OpenAIChatRequest(GenerationOptions):
    """OpenAI's chat completion request, the parts this endpoint implements; `answer_mode`
    is an extra field. Any other field is refused (400) unless its value changes nothing."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Ignored: the loaded model answers.")
    messages: list[OpenAIMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(
        None, ge=1, le=4096, description="Max new tokens (OpenAI's newer name of max_tokens)."
    )
    stream: bool | None = False
    stream_options: OpenAIStreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="Only 1 is supported.")

    @model_validator(mode="before")
    @classmethod
    def _neutral_fields(cls, data: Any) -> Any:
        known = set(cls.model_fields)
        data = _drop_neutral(data, OPENAI_NEUTRAL_VALUES, known)
        if isinstance(data, dict):
            data = {key: value for key, value in data.items() if key not in OPENAI_IGNORED_FIELDS}
        return data

    @field_validator("messages")
    @classmethod
    def _ends_with_a_question(cls, messages: list[OpenAIMessage]) -> list[OpenAIMessage]:
        if messages[-1].role != "user" or not messages[-1].content.strip():
            raise PydanticCustomError(
                "invalid_value", "the last message must be the question: role 'user', not empty"
            )
        return messages

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, value: OpenAIStreamOptions | None, info: ValidationInfo):
        if value is not None and not info.data.get("stream"):
            raise PydanticCustomError(
                "invalid_value", "stream_options is only allowed when stream is true"
            )
        return value

    @property
    def new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def instructions(self) -> str | None:
        """The system and developer messages, in order, joined: None if there are none."""
        texts = [m.content.strip() for m in self.messages if m.role in OPENAI_INSTRUCTION_ROLES]
        return "\n\n".join(t for t in texts if t) or None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)
