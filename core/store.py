"""The vector-store and embedding setup that ingestion and the chains share.

Points live in one Qdrant collection with two named vectors: `dense` (the sentence
embedding, cosine) and `sparse` (hashed keyword counts, IDF applied by Qdrant), so
exact numbers and section ids like `15.109` match in hybrid search. The payload is
LangChain's layout (`page_content` + `metadata`), so `QdrantVectorStore` reads it too.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import Counter
from functools import lru_cache
from typing import TYPE_CHECKING

from qdrant_client import QdrantClient, models

from core.models import resolve_embedding_model
from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from langchain_huggingface import HuggingFaceEmbeddings
    from sentence_transformers import SentenceTransformer

DENSE = "dense"
SPARSE = "sparse"
CONTENT_KEY = "page_content"
METADATA_KEY = "metadata"
INDEXED_FIELDS = ("source", "section", "part", "file_hash", "doc_type", "root")


class StoreUnavailableError(RuntimeError):
    """The vector store cannot be opened; the message says what to do."""


class StoreLockedError(StoreUnavailableError):
    """Another process holds the embedded store."""


_clients: dict[str, QdrantClient] = {}
_clients_lock = threading.Lock()


def get_client(settings: Settings | None = None) -> QdrantClient:
    """One client per store location per process (local mode allows one process per folder)."""
    settings = settings or get_settings()
    key = settings.qdrant_url or (
        f"{settings.qdrant_host}:{settings.qdrant_port}"
        if settings.qdrant_host
        else str(settings.qdrant_location.resolve())
    )
    with _clients_lock:
        if key in _clients:
            return _clients[key]
        _clients[key] = _open_client(settings)
        return _clients[key]


def _open_client(settings: Settings) -> QdrantClient:
    if settings.qdrant_url:
        client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
    elif settings.qdrant_host:
        client = QdrantClient(
            host=settings.qdrant_host, port=settings.qdrant_port, api_key=settings.qdrant_api_key
        )
    else:
        path = settings.qdrant_location
        path.mkdir(parents=True, exist_ok=True)
        try:
            return QdrantClient(path=str(path))
        except RuntimeError as error:
            if "already accessed" in str(error):
                raise StoreLockedError(
                    f"The embedded Qdrant store at {path} is in use by another process "
                    "(most likely the running app). The embedded store allows one process "
                    "per folder: stop the app and run this again, or ingest through the app "
                    "(upload in the chat, or POST /api/ingest), or run a Qdrant server and "
                    "set QDRANT_URL."
                ) from error
            raise
    try:
        client.get_collections()
    except Exception as error:
        raise StoreUnavailableError(
            f"Cannot reach the Qdrant server ({settings.qdrant_url or settings.qdrant_host}): "
            f"{error}. Start it (see the README) or unset QDRANT_URL/QDRANT_HOST to use the "
            "embedded store."
        ) from error
    return client


def close_clients() -> None:
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


@lru_cache
def _embeddings_for(model: str) -> HuggingFaceEmbeddings:
    from langchain_huggingface import HuggingFaceEmbeddings

    settings = get_settings()
    return HuggingFaceEmbeddings(
        model_name=model,
        model_kwargs={"device": "cpu" if settings.device == "auto" else settings.device},
        encode_kwargs={"normalize_embeddings": True, "batch_size": settings.embed_batch_size},
    )


def get_embeddings(settings: Settings | None = None) -> HuggingFaceEmbeddings:
    """The LangChain embeddings object (shared, loaded once per process)."""
    return _embeddings_for(resolve_embedding_model(settings=settings or get_settings()))


def get_sentence_model(settings: Settings | None = None) -> SentenceTransformer:
    """The SentenceTransformer behind `get_embeddings` (for batch encoding and its tokenizer)."""
    return get_embeddings(settings)._client


_tokenizer_copies = threading.local()


def get_chunking_tokenizer(settings: Settings | None = None):
    """This thread's own copy of the embedder's tokenizer, for chunking.

    The fast tokenizer keeps its truncation setting on the shared Rust object and switches
    it per call: chunking measures whole texts (no truncation), query encoding truncates to
    the model window. Sharing one across threads raised `RuntimeError: Already borrowed`
    in older `tokenizers` and, in current ones, silently truncates a text being chunked
    while a query is encoded. A private copy per thread keeps the two apart.
    """
    model = get_sentence_model(settings)
    copies = _tokenizer_copies.__dict__.setdefault("by_model", {})
    entry = copies.get(id(model))
    if entry is None or entry[0] is not model:
        import copy

        entry = copies[id(model)] = (model, copy.deepcopy(model.tokenizer))
    return entry[1]


def embedding_dim(settings: Settings | None = None) -> int:
    model = get_sentence_model(settings)
    get_dim = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return int(get_dim())


# Keyword sparse vectors -----------------------------------------------------------------

_TOKEN = re.compile(r"\d+(?:\.\d+)+[a-z]?|[a-z]+\d*|\d+")
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was "
    "were which with what when where who how does do can may must shall any all each not no "
    "than then there these those such under".split()
)
_BM25_K1 = 1.2
_BM25_B = 0.75
_AVG_DOC_TOKENS = 120.0


def keyword_tokens(text: str) -> list[str]:
    """Lowercased words, numbers and dotted ids (`15.109`, `1.6`); stopwords dropped."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


def _token_index(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "big")


def sparse_document_vector(text: str) -> models.SparseVector:
    """BM25 term-frequency weights; Qdrant multiplies in the IDF (Modifier.IDF)."""
    counts = Counter(keyword_tokens(text))
    length = sum(counts.values()) or 1
    norm = _BM25_K1 * (1 - _BM25_B + _BM25_B * length / _AVG_DOC_TOKENS)
    weights: dict[int, float] = {}
    for token, tf in counts.items():
        index = _token_index(token)
        weights[index] = weights.get(index, 0.0) + tf * (_BM25_K1 + 1) / (tf + norm)
    return models.SparseVector(indices=list(weights), values=list(weights.values()))


def sparse_query_vector(text: str) -> models.SparseVector:
    indices = sorted({_token_index(t) for t in keyword_tokens(text)})
    return models.SparseVector(indices=indices, values=[1.0] * len(indices))


def bm25_idf(doc_count: int, containing: int) -> float:
    """The IDF Qdrant applies with Modifier.IDF (for offline BM25 baselines)."""
    return math.log(1 + (doc_count - containing + 0.5) / (containing + 0.5))


# Collection --------------------------------------------------------------------------------


def ensure_collection(client: QdrantClient, name: str, dim: int, recreate: bool = False) -> bool:
    """Create the collection if needed; return True when it was (re)created."""
    exists = client.collection_exists(name)
    if exists and recreate:
        client.delete_collection(name)
        exists = False
    if exists:
        info = client.get_collection(name)
        vectors = info.config.params.vectors
        if not isinstance(vectors, dict) or DENSE not in vectors or vectors[DENSE].size != dim:
            raise StoreUnavailableError(
                f"Collection {name!r} exists with another vector layout than this embedding "
                f"model's ({dim}-dimensional {DENSE!r} + {SPARSE!r}). Re-ingest with --recreate, "
                "or choose another COLLECTION_NAME."
            )
        return False
    client.create_collection(
        name,
        vectors_config={DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE)},
        sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    if _is_embedded(client):
        return True  # the embedded store ignores payload indexes
    for field in INDEXED_FIELDS:
        client.create_payload_index(
            name, f"{METADATA_KEY}.{field}", field_schema=models.PayloadSchemaType.KEYWORD
        )
    return True


def _is_embedded(client: QdrantClient) -> bool:
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), QdrantLocal)


def metadata_filter(**conditions: str | list[str] | None) -> models.Filter | None:
    """A Qdrant filter on metadata fields, e.g. metadata_filter(source="a.pdf", section=["15.109"])."""
    must = []
    for field, value in conditions.items():
        if value is None or value == [] or value == "":
            continue
        key = f"{METADATA_KEY}.{field}"
        if isinstance(value, list | tuple | set):
            must.append(models.FieldCondition(key=key, match=models.MatchAny(any=list(value))))
        else:
            must.append(models.FieldCondition(key=key, match=models.MatchValue(value=value)))
    return models.Filter(must=must) if must else None
