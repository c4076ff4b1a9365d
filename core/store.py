"""The vector-store and embedding setup that ingestion and the chains share.

Points live in one Qdrant collection with two named vectors: `dense` (the sentence
embedding, cosine) and `sparse` (BM25 keyword weights from Qdrant's own BM25 model, IDF
applied by Qdrant), so exact numbers and section ids like `15.109` match in hybrid search.
The payload is LangChain's layout (`page_content` + `metadata`), so `QdrantVectorStore`
reads it too.

One interface, three places the collection can live: a Qdrant server (QDRANT_URL or
QDRANT_HOST; qdrant-client), or embedded in this process under QDRANT_PATH, where
STORE_ENGINE picks the engine: `edge` (default), the Qdrant engine itself in-process
(qdrant-edge-py: HNSW, inverted sparse index, payload indexes), or `local`, qdrant-client's
Python local mode. Both embedded engines allow one process per folder. `EdgeClient` answers
the QdrantClient calls this project makes, with qdrant-client's own types, so the callers
(ingestion, retrieval, evaluation) are the same for all three, and a collection's points
(same vector names, payload and ids) move to a server unchanged. See
bench/results/store-engines.md for the measurements behind the default.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

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


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def get_client(settings: Settings | None = None) -> QdrantClient:
    """One client per store location per process (the embedded engines allow one process per
    folder). A QdrantClient for a server or local mode, an EdgeClient (the same calls) for
    the Edge engine."""
    settings = settings or get_settings()
    key = settings.qdrant_url or (
        f"{settings.qdrant_host}:{settings.qdrant_port}"
        if settings.qdrant_host
        else f"{settings.store_engine}:{settings.qdrant_location.resolve()}"
    )
    with _clients_lock:
        if key in _clients:
            return _clients[key]
        _clients[key] = _open_client(settings)
        return _clients[key]


def _locked_message(path: Path) -> str:
    return (
        f"The embedded Qdrant store at {path} is in use by another process "
        "(most likely the running app). The embedded store allows one process "
        "per folder: stop the app and run this again, or ingest through the app "
        "(upload in the chat, or POST /api/ingest), or run a Qdrant server and "
        "set QDRANT_URL."
    )


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
        if settings.store_engine == "edge":
            return EdgeClient(path)  # type: ignore[return-value]
        try:
            return QdrantClient(path=str(path))
        except RuntimeError as error:
            if "already accessed" in str(error):
                raise StoreLockedError(_locked_message(path)) from error
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


# The Edge engine -------------------------------------------------------------------------


def _edge():
    import qdrant_edge

    return qdrant_edge


class EdgeClient:
    """The Qdrant engine in-process (qdrant-edge-py), behind the QdrantClient methods this
    project calls, taking and returning qdrant-client's types.

    Each collection is one Edge shard in `<path>/edge/<name>/` (with `collection.json`: the
    vector layout). The folder's `.lock`, held for the client's life, keeps a second process
    out (of either engine); `close()` flushes and releases it. Writes are applied when the call
    returns (`wait` is always true). `optimize(collection)` builds the HNSW graph and merges
    segments; ingestion calls it after writing (`settle`).
    """

    def __init__(self, path: str | Path):
        import fcntl

        self.path = Path(path)
        self.root = self.path / "edge"
        self.root.mkdir(parents=True, exist_ok=True)
        # The folder's lock, the very file local mode locks: one process per folder,
        # whichever engine it runs.
        self._lock_file = open(self.path / ".lock", "a+")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            self._lock_file.close()
            raise StoreLockedError(_locked_message(self.path)) from error
        self._shards: dict[str, Any] = {}
        self._meta: dict[str, dict] = {}
        self._lock = threading.RLock()
        self._closed = False

    # Collections ---------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"Invalid collection name {name!r}")
        return self.root / name

    def collection_exists(self, collection_name: str) -> bool:
        return (self._dir(collection_name) / "collection.json").is_file()

    def get_collections(self) -> models.CollectionsResponse:
        names = sorted(p.parent.name for p in self.root.glob("*/collection.json"))
        return models.CollectionsResponse(
            collections=[models.CollectionDescription(name=n) for n in names]
        )

    def _shard(self, name: str):
        with self._lock:
            if self._closed:
                raise StoreUnavailableError("The embedded store is closed.")
            shard = self._shards.get(name)
            if shard is None:
                if not self.collection_exists(name):
                    raise ValueError(f"Collection {name} not found")
                try:
                    shard = _edge().EdgeShard.load(str(self._dir(name) / "shard"))
                except Exception as error:
                    if "WouldBlock" in str(error):
                        raise StoreLockedError(_locked_message(self.path)) from error
                    raise
                self._shards[name] = shard
            return shard

    def _layout(self, name: str) -> dict:
        if name not in self._meta:
            self._meta[name] = json.loads((self._dir(name) / "collection.json").read_text())
        return self._meta[name]

    def get_collection(self, collection_name: str):
        """The parts of CollectionInfo the callers read: config.params, points_count."""
        layout = self._layout(collection_name)
        vectors = {
            name: models.VectorParams(size=v["size"], distance=models.Distance(v["distance"]))
            for name, v in layout["vectors"].items()
        }
        sparse = {
            name: models.SparseVectorParams(
                modifier=models.Modifier(v["modifier"]) if v.get("modifier") else None
            )
            for name, v in layout["sparse_vectors"].items()
        }
        params = SimpleNamespace(vectors=vectors, sparse_vectors=sparse)
        count = self._shard(collection_name).count(_edge().CountRequest(exact=True))
        return SimpleNamespace(
            config=SimpleNamespace(params=params), points_count=count, status="green"
        )

    def create_collection(
        self,
        collection_name: str,
        vectors_config: dict[str, models.VectorParams],
        sparse_vectors_config: dict[str, models.SparseVectorParams] | None = None,
        **_: Any,
    ) -> bool:
        qe = _edge()
        folder = self._dir(collection_name)
        if self.collection_exists(collection_name):
            raise ValueError(f"Collection {collection_name} already exists")
        distances = {
            models.Distance.COSINE: qe.Distance.Cosine,
            models.Distance.DOT: qe.Distance.Dot,
            models.Distance.EUCLID: qe.Distance.Euclid,
            models.Distance.MANHATTAN: qe.Distance.Manhattan,
        }
        sparse_vectors_config = sparse_vectors_config or {}
        config = qe.EdgeConfig(
            vectors={
                name: qe.EdgeVectorParams(size=v.size, distance=distances[v.distance])
                for name, v in vectors_config.items()
            },
            sparse_vectors={
                name: qe.EdgeSparseVectorParams(
                    modifier=qe.Modifier.Idf if v.modifier == models.Modifier.IDF else None
                )
                for name, v in sparse_vectors_config.items()
            },
        )
        with self._lock:
            shutil.rmtree(folder, ignore_errors=True)  # a half-created one
            folder.mkdir(parents=True)
            self._shards[collection_name] = qe.EdgeShard.create(str(folder / "shard"), config)
            layout = {
                "vectors": {
                    n: {"size": v.size, "distance": v.distance.value}
                    for n, v in vectors_config.items()
                },
                "sparse_vectors": {
                    n: {"modifier": v.modifier.value if v.modifier else None}
                    for n, v in sparse_vectors_config.items()
                },
            }
            (folder / "collection.json").write_text(json.dumps(layout, indent=1))
            self._meta[collection_name] = layout
        return True

    def delete_collection(self, collection_name: str, **_: Any) -> bool:
        with self._lock:
            shard = self._shards.pop(collection_name, None)
            self._meta.pop(collection_name, None)
            if shard is not None:
                shard.close()
            existed = self.collection_exists(collection_name)
            shutil.rmtree(self._dir(collection_name), ignore_errors=True)
            return existed

    def create_payload_index(
        self, collection_name: str, field_name: str, field_schema=None, **_: Any
    ):
        qe = _edge()
        schema = models.PayloadSchemaType(
            getattr(field_schema, "value", field_schema) or models.PayloadSchemaType.KEYWORD
        )
        kinds = {
            models.PayloadSchemaType.KEYWORD: qe.PayloadSchemaType.Keyword,
            models.PayloadSchemaType.INTEGER: qe.PayloadSchemaType.Integer,
            models.PayloadSchemaType.FLOAT: qe.PayloadSchemaType.Float,
            models.PayloadSchemaType.BOOL: qe.PayloadSchemaType.Bool,
            models.PayloadSchemaType.TEXT: qe.PayloadSchemaType.Text,
            models.PayloadSchemaType.UUID: qe.PayloadSchemaType.Uuid,
            models.PayloadSchemaType.DATETIME: qe.PayloadSchemaType.Datetime,
        }
        self._shard(collection_name).update(
            qe.UpdateOperation.create_field_index(field_name, kinds[schema])
        )

    def optimize(self, collection_name: str) -> bool:
        """Build the HNSW graph and merge segments (blocks until done)."""
        shard = self._shard(collection_name)
        changed = shard.optimize()
        shard.flush()
        return changed

    # Points --------------------------------------------------------------------------------

    def upsert(self, collection_name: str, points: list, wait: bool = True, **_: Any):
        qe = _edge()
        converted = [
            qe.Point(_edge_id(p.id), _edge_vector(p.vector), p.payload or {}) for p in points
        ]
        self._shard(collection_name).update(qe.UpdateOperation.upsert_points(converted))
        return models.UpdateResult(operation_id=None, status=models.UpdateStatus.COMPLETED)

    def delete(self, collection_name: str, points_selector, wait: bool = True, **_: Any):
        qe = _edge()
        if isinstance(points_selector, models.FilterSelector):
            operation = qe.UpdateOperation.delete_points_by_filter(
                _edge_filter(points_selector.filter)
            )
        elif isinstance(points_selector, models.Filter):
            operation = qe.UpdateOperation.delete_points_by_filter(_edge_filter(points_selector))
        else:
            ids = (
                points_selector.points
                if isinstance(points_selector, models.PointIdsList)
                else points_selector
            )
            operation = qe.UpdateOperation.delete_points([_edge_id(i) for i in ids])
        self._shard(collection_name).update(operation)
        return models.UpdateResult(operation_id=None, status=models.UpdateStatus.COMPLETED)

    def count(self, collection_name: str, count_filter=None, exact: bool = True, **_: Any):
        request = _edge().CountRequest(exact=exact, filter=_edge_filter(count_filter))
        return models.CountResult(count=self._shard(collection_name).count(request))

    def scroll(
        self,
        collection_name: str,
        scroll_filter=None,
        limit: int = 10,
        offset=None,
        with_payload=True,
        with_vectors=False,
        **_: Any,
    ):
        request = _edge().ScrollRequest(
            offset=None if offset is None else _edge_id(offset),
            limit=limit,
            filter=_edge_filter(scroll_filter),
            with_payload=_edge_selector(with_payload),
            with_vector=_edge_selector(with_vectors),
        )
        records, next_offset = self._shard(collection_name).scroll(request)
        return (
            [_record(r) for r in records],
            None if next_offset is None else str(next_offset),
        )

    def retrieve(
        self, collection_name: str, ids, with_payload=True, with_vectors=False, **_: Any
    ) -> list[models.Record]:
        records = self._shard(collection_name).retrieve(
            [_edge_id(i) for i in ids],
            with_payload=_edge_selector(with_payload),
            with_vector=_edge_selector(with_vectors),
        )
        return [_record(r) for r in records]

    def _request(self, query, using, query_filter, limit, score_threshold, payload, vectors):
        qe = _edge()
        if isinstance(query, models.SparseVector):
            vector = qe.SparseVector(list(query.indices), list(query.values))
        elif hasattr(query, "tolist"):
            vector = query.tolist()
        else:
            vector = list(query)
        return qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(vector, using=using),
            filter=_edge_filter(query_filter),
            score_threshold=score_threshold,
            with_payload=_edge_selector(payload),
            with_vector=_edge_selector(vectors),
        )

    def query_points(
        self,
        collection_name: str,
        query,
        using: str | None = None,
        query_filter=None,
        limit: int = 10,
        score_threshold: float | None = None,
        with_payload=True,
        with_vectors=False,
        **_: Any,
    ) -> SimpleNamespace:
        request = self._request(
            query, using, query_filter, limit, score_threshold, with_payload, with_vectors
        )
        points = self._shard(collection_name).query(request)
        return SimpleNamespace(points=[_scored(p) for p in points])

    def query_batch_points(
        self, collection_name: str, requests: list[models.QueryRequest], **_: Any
    ) -> list[SimpleNamespace]:
        qe = _edge()
        batch = [
            self._request(
                r.query,
                r.using,
                r.filter,
                r.limit or 10,
                r.score_threshold,
                True if r.with_payload is None else r.with_payload,
                r.with_vector or False,
            )  # fmt: skip
            for r in requests
        ]
        results = self._shard(collection_name).query_batch(qe.QueryBatchRequest(batch))
        return [SimpleNamespace(points=[_scored(p) for p in points]) for points in results]

    def close(self, **_: Any) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for shard in self._shards.values():
                try:
                    shard.flush()
                finally:
                    shard.close()
            self._shards.clear()
            self._lock_file.close()  # releases the flock


def _edge_id(point_id):
    return point_id if isinstance(point_id, int) else str(point_id)


def _edge_vector(vector):
    qe = _edge()
    if not isinstance(vector, dict):
        return vector.tolist() if hasattr(vector, "tolist") else list(vector)
    out = {}
    for name, value in vector.items():
        if isinstance(value, models.SparseVector):
            out[name] = qe.SparseVector(list(value.indices), list(value.values))
        elif isinstance(value, qe.SparseVector):
            out[name] = value
        else:
            out[name] = value.tolist() if hasattr(value, "tolist") else list(value)
    return out


def _edge_selector(selector):
    if selector is None or isinstance(selector, bool):
        return bool(selector)
    if isinstance(selector, list | tuple):
        return list(selector)
    if isinstance(selector, models.PayloadSelectorInclude):
        return list(selector.include)
    raise NotImplementedError(f"Unsupported selector {selector!r}")


def _from_edge_vector(vector):
    if not isinstance(vector, dict):
        return vector
    qe = _edge()
    return {
        name: models.SparseVector(indices=list(v.indices), values=list(v.values))
        if isinstance(v, qe.SparseVector)
        else v
        for name, v in vector.items()
    }


def _record(record) -> models.Record:
    return models.Record.model_construct(
        id=str(record.id) if not isinstance(record.id, int) else record.id,
        payload=record.payload,
        vector=_from_edge_vector(record.vector),
        shard_key=None,
        order_value=None,
    )


def _scored(point) -> models.ScoredPoint:
    return models.ScoredPoint.model_construct(
        id=str(point.id) if not isinstance(point.id, int) else point.id,
        version=point.version,
        score=point.score,
        payload=point.payload,
        vector=_from_edge_vector(point.vector),
        shard_key=None,
        order_value=None,
    )


def _edge_conditions(conditions) -> list | None:
    if conditions is None:
        return None
    if not isinstance(conditions, list | tuple):
        conditions = [conditions]
    return [_edge_condition(c) for c in conditions]


def _edge_filter(query_filter):
    if query_filter is None:
        return None
    qe = _edge()
    return qe.Filter(
        must=_edge_conditions(query_filter.must),
        should=_edge_conditions(query_filter.should),
        must_not=_edge_conditions(query_filter.must_not),
    )


def _edge_condition(condition):
    qe = _edge()
    if isinstance(condition, models.Filter):
        return _edge_filter(condition)
    if isinstance(condition, models.HasIdCondition):
        return qe.HasIdCondition({_edge_id(i) for i in condition.has_id})
    if isinstance(condition, models.IsEmptyCondition):
        return qe.IsEmptyCondition(condition.is_empty.key)
    if isinstance(condition, models.IsNullCondition):
        return qe.IsNullCondition(condition.is_null.key)
    if isinstance(condition, models.FieldCondition):
        match, range_ = condition.match, condition.range
        if isinstance(match, models.MatchValue):
            match = qe.MatchValue(match.value)
        elif isinstance(match, models.MatchAny):
            match = qe.MatchAny(list(match.any))
        elif isinstance(match, models.MatchExcept):
            match = qe.MatchExcept(list(match.except_))
        elif isinstance(match, models.MatchText):
            match = qe.MatchText(match.text)
        elif match is not None:
            raise NotImplementedError(f"Unsupported match {match!r}")
        if isinstance(range_, models.Range):
            range_ = qe.RangeFloat(gte=range_.gte, gt=range_.gt, lte=range_.lte, lt=range_.lt)
        elif range_ is not None:
            raise NotImplementedError(f"Unsupported range {range_!r}")
        return qe.FieldCondition(key=condition.key, match=match, range=range_)
    raise NotImplementedError(f"Unsupported filter condition {condition!r}")


def settle(client: Any, collection: str) -> None:
    """After a run of writes: let the Edge engine build its indexes (no-op elsewhere)."""
    if isinstance(client, EdgeClient) and client.collection_exists(collection):
        client.optimize(collection)


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


def keyword_tokens(text: str) -> list[str]:
    """Lowercased words, numbers and dotted ids (`15.109`, `1.6`); stopwords dropped.

    The vocabulary the answer checks compare; the index's own tokens are
    the keyword model's (KeywordModel, stemmed).
    """
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


@dataclass(frozen=True)
class KeywordModel:
    """The BM25 model of the `sparse` vectors: Qdrant's own (qdrant_edge.Bm25, the model a
    Qdrant server's BM25 inference runs), computed here so that any Qdrant stores them.

    `tokenizer="ids"` first splits the text with `keyword_tokens`' pattern (so `15.109` and
    `2.1093` stay one token); `"word"` is Qdrant's word tokenizer (which splits `15.109`
    into `15` and `109`). `stemmer`: a Snowball language ("english") or None; `stopwords`:
    "project" (`keyword_tokens`' list), "english" (Qdrant's) or "none". Documents get
    term-frequency weights (k, b, avg_len); queries weight each distinct token 1; Qdrant
    multiplies in the IDF (Modifier.IDF). The defaults reproduce the hand-written model's
    rankings, which the guarded evaluations hold (bench/results/store-engines.md: stemming
    cost eCFR hit@1, a shorter avg_len the sample set's hit@1). `signature` goes into each
    chunk's chunking signature, so changing any parameter re-indexes.
    """

    tokenizer: Literal["ids", "word"] = "ids"
    k: float = 1.2
    b: float = 0.75
    # 120, not the chunks' median of 64: at 64 the guarded sample evaluation lost 0.046 hybrid
    # hit@1 (0.805 -> 0.759) and 0.024 MRR; at 120 it ranks as the hand-written model did.
    avg_len: float = 120.0
    stemmer: str | None = None
    stopwords: Literal["project", "english", "none"] = "project"

    @property
    def signature(self) -> str:
        return "bm25:" + json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def _text(self, text: str) -> str:
        if self.tokenizer == "ids":
            return " ".join(_TOKEN.findall(text.lower()))
        return text

    def document(self, text: str) -> models.SparseVector:
        vector = _bm25(self).embed_document(self._text(text))
        return models.SparseVector(indices=list(vector.indices), values=list(vector.values))

    def query(self, text: str) -> models.SparseVector:
        vector = _bm25(self).embed_query(self._text(text))
        indices = sorted(vector.indices)
        return models.SparseVector(indices=indices, values=[1.0] * len(indices))


@lru_cache
def _bm25(model: KeywordModel):
    qe = _edge()
    stopwords = {
        "project": qe.StopwordsSet(custom=set(_STOPWORDS)),
        "english": qe.StopwordsSet(languages={qe.Language.English}),
        "none": qe.StopwordsSet(custom=set()),
    }[model.stopwords]
    stemmer = (
        qe.SnowballParams(getattr(qe.SnowballLanguage, model.stemmer.capitalize()))
        if model.stemmer
        else qe.DisabledStemmer()
    )
    config = qe.Bm25Config(
        k=model.k,
        b=model.b,
        avg_len=model.avg_len,
        tokenizer=qe.TokenizerType.Whitespace
        if model.tokenizer == "ids"
        else qe.TokenizerType.Word,
        language="english",
        stopwords=stopwords,
        stemmer=stemmer,
    )
    return qe.Bm25(config)


# The keyword model of every collection this code writes (the benchmark swaps it).
KEYWORD_MODEL = KeywordModel()


def keyword_signature() -> str:
    return KEYWORD_MODEL.signature


def sparse_document_vector(text: str) -> models.SparseVector:
    """The chunk's BM25 term-frequency weights; Qdrant multiplies in the IDF (Modifier.IDF)."""
    return KEYWORD_MODEL.document(text)


def sparse_query_vector(text: str) -> models.SparseVector:
    """The query's distinct keywords, weight 1 each."""
    return KEYWORD_MODEL.query(text)


def keyword_ids(text: str) -> set[int]:
    """The ids of the text's distinct keywords (the indices of its query vector)."""
    return set(KEYWORD_MODEL.query(text).indices)


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
        return True  # local mode ignores payload indexes (the Edge engine builds them)
    for field in INDEXED_FIELDS:
        client.create_payload_index(
            name, f"{METADATA_KEY}.{field}", field_schema=models.PayloadSchemaType.KEYWORD
        )
    return True


def _is_embedded(client: QdrantClient) -> bool:
    """Whether this is qdrant-client's local mode."""
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
