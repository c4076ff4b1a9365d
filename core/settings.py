"""One typed settings object for the whole project, read from the environment and `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The team-written sample documents (restatements of Parts 1, 2, 15 and KDB guidance in every
# loader's format): loader fixtures and the sample gold set's corpus (data/eval/gold.jsonl),
# never the default corpus. Opt in with CORPUS_DIR=data/samples (or CORPUS_PATH).
SAMPLE_CORPUS = PROJECT_ROOT / "data" / "samples"

Quantization = Literal["auto", "4bit", "8bit", "none"]
RetrievalMode = Literal["dense", "hybrid", "bm25"]
# verified: the model drafts, a verifier keeps only sentences a cited passage supports.
# extractive: quotes of the best passages, no model call. raw: the model's text as it is.
AnswerMode = Literal["verified", "extractive", "raw"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=PROJECT_ROOT / ".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Paths
    data_dir: Path = PROJECT_ROOT / "data"
    cache_dir: Path = PROJECT_ROOT / ".cache"
    # What `make run` indexes; default <data_dir>/corpus: the eCFR text of 47 CFR Parts 97 and
    # 80 (data/corpus/ecfr/SOURCES.md). CORPUS_DIR or CORPUS_PATH.
    corpus_dir: Path | None = Field(
        None, validation_alias=AliasChoices("corpus_dir", "corpus_path")
    )
    checkpoints_dir: Path | None = None  # default: <data_dir>/checkpoints

    # Qdrant: a server (QDRANT_URL, or QDRANT_HOST + QDRANT_PORT) or the embedded store.
    qdrant_url: str | None = None
    qdrant_host: str | None = None
    qdrant_port: int = 6333
    qdrant_api_key: str | None = None
    qdrant_path: Path | None = None  # default: <data_dir>/qdrant
    # The embedded store's engine (no server set): "edge" is the Qdrant engine in-process
    # (qdrant-edge-py), "local" qdrant-client's Python local mode (bench/results/store-engines.md).
    store_engine: Literal["edge", "local"] = "edge"
    collection_name: str = "fcc_docs"

    # Models: empty means the bundled default.
    local_base_model_path: str = ""
    # The shipped QLoRA adapter (trained on the served RAG prompt, data/adapters/*/README.md);
    # LOCAL_ADAPTER_PATH= (empty) serves the bare base model.
    local_adapter_path: str | None = str(PROJECT_ROOT / "data" / "adapters" / "smollm2-fcc-rag")
    embedding_model: str = ""
    hf_token: str | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    quantization: Quantization = "auto"  # auto: 4-bit NF4 on CUDA, full precision on CPU

    # Generation
    context_window: int = 2048
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    # Generations decoded together when several wait for the model (1: one at a time, the
    # default). Measured (bench/results/batching*.md): 2.0-2.5x at 16 concurrent on an H200 in
    # bf16, none in 4-bit or on a 2-core CPU, where the long RAG prompts' prefill dominates.
    generation_batch_size: int = Field(1, ge=1)

    # Chunking and retrieval
    chunk_tokens: int = Field(200, description="Max embedder tokens per chunk (window is 256).")
    chunk_overlap_tokens: int = 32
    embed_batch_size: int = 64
    # Chunks retrieved per question; their passages are ranked (chains.evidence). 8, not 4: on
    # the eCFR gold set the wider candidate set raised extractive key-fact recall 0.39 -> 0.44
    # and a gold section among the passages shown 0.56 -> 0.58. 12, not 8: the chunk holding
    # § 97.313(j) ranked 10th for "the most transmitter output ... spread spectrum (SS)", (i)
    # 9th for "the maximum power ... on the 60 meter band"; exam 0.912 -> 0.922, sample key
    # facts 0.701 -> 0.713, no eCFR gold figure moved, no median time moved (README, issue 20).
    retrieval_k: int = 12
    retrieval_mode: RetrievalMode = "hybrid"
    # The other chunks of the best chunks' first N sections are ranked too (0: off): the
    # paragraph for the asked case often lies in a chunk of the right section that did not
    # rank (Retriever.with_section_chunks; measured in the README, issue 20).
    section_chunks: int = Field(2, ge=0)
    score_threshold: float = 0.3  # min dense cosine similarity for a chunk to count as relevant

    # Answers: evidence passages, verification, abstention
    answer_mode: AnswerMode = "verified"
    evidence_passages: int = Field(4, description="Numbered passages the model sees.")
    # Best passage score (chains.evidence scale) below which the answer is "not covered";
    # calibrated on the gold sets (bench/results/abstention.md).
    passage_threshold: float = 0.41
    # Best passage score below which an answer opens with WEAK_MATCH_NOTE (the closest passages
    # may not answer the question): on both gold sets, answers below it quote a passage outside
    # the rule asked about at least half the time (bench/results/abstention.md).
    passage_confident: float = 0.58
    passage_margin: float = Field(
        0.25, description="Passages scoring this far below the best are left out."
    )
    # The chat model rereads the kept passages and reorders them by log P(question | passage)
    # (chains.rerank); 0 turns it off. bench/results/rerank.md measured the weight.
    rerank_weight: float = Field(
        0.3, ge=0, description="Weight of the chat model's rereading of the kept passages."
    )
    answer_max_tokens: int = Field(96, description="Max new tokens of a RAG answer's draft.")
    answer_repetition_penalty: float = 1.0
    # Summaries (chains/summarize.py): verified (quoted provisions with pinpoints, the model's
    # condensed sentences only where the verifier keeps them) | extractive (quotes, no model
    # call) | raw (the model's text, unverified, for comparison).
    summary_mode: AnswerMode = "verified"

    # Server
    host: str = "127.0.0.1"  # loopback; beyond it the server needs API_KEY or ALLOW_OPEN_HOST
    port: int = 8000
    api_key: str | None = None  # guards the REST API and, as the login password, the chat
    allow_open_host: bool = False  # start on a non-loopback HOST without API_KEY (warns)
    cors_origins: str = ""  # comma-separated origins allowed cross-origin; default: none
    chat_users: str = ""  # "name:password,..." chat logins besides API_KEY (needs API_KEY)
    max_upload_mb: int = 25
    # Answers waiting for (or in) generation; past it a request gets 429 with Retry-After.
    max_pending_answers: int = Field(64, ge=1)
    # GPUs a training job started from the API uses: 0 = every visible GPU (one process per GPU
    # through `accelerate launch`), 1 = one process. CPU-only machines always run one process.
    training_gpus: int = Field(0, ge=0)

    @field_validator("local_adapter_path", "qdrant_url", "qdrant_host", "api_key", "hf_token")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None

    @property
    def qdrant_location(self) -> Path:
        return self.qdrant_path or self.data_dir / "qdrant"

    @property
    def corpus_path(self) -> Path:
        return self.corpus_dir or self.data_dir / "corpus"

    @property
    def checkpoints_path(self) -> Path:
        return self.checkpoints_dir or self.data_dir / "checkpoints"

    @property
    def uploads_path(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def feedback_db(self) -> Path:
        return self.data_dir / "feedback.sqlite3"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def chat_user_passwords(self) -> dict[str, str]:
        """CHAT_USERS as {name: password}; an entry without `:` or with an empty part is ignored."""
        users = {}
        for entry in self.chat_users.split(","):
            name, sep, password = entry.strip().partition(":")
            if sep and name.strip() and password:
                users[name.strip()] = password
        return users

    @property
    def uses_server(self) -> bool:
        return bool(self.qdrant_url or self.qdrant_host)


@lru_cache
def get_settings() -> Settings:
    return Settings()
