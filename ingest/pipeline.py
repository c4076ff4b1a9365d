"""Idempotent ingestion into the shared Qdrant collection.

A file's chunks are keyed by (root, source) and carry the sha256 of the file bytes. A run
reads those hashes back (payload only, no vectors) and then, per file: skips it when the
stored chunks are complete and match the bytes and the chunking settings; replaces them
(upsert the new chunks, then delete the old points the new ones did not overwrite, after
the flush that wrote them: a crash in between leaves the old or the new chunks, or both,
never neither, and the next run finishes the job) when the file changed; adds it when it is
new. Sources
under an ingested folder whose files are gone are removed. Embedding runs in large
batches across files; points go to Qdrant in `wait=True` batches.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qdrant_client import QdrantClient, models

from core.records import RetrievedChunk
from core.settings import Settings, get_settings
from core.store import (
    CONTENT_KEY,
    DENSE,
    METADATA_KEY,
    SPARSE,
    embedding_dim,
    ensure_collection,
    get_chunking_tokenizer,
    get_client,
    get_sentence_model,
    keyword_signature,
    metadata_filter,
    settle,
    sparse_document_vector,
)
from ingest.chunking import Chunk, Chunker
from ingest.documents import SkipFile
from ingest.ecfr import SOURCES_NOTE
from ingest.loaders import LOADERS, UNSUPPORTED_HINTS, load_file

log = logging.getLogger(__name__)

# 2: char_start and para_path in the chunk metadata; 3: one definition a chunk; 4: no
# numbered headings inside a rule (a table caption is text).
CHUNKER_VERSION = "4"
POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "fcc-rag/chunk")
UPSERT_BATCH = 256
SCROLL_PAGE = 2048
ENCODE_GROUP_BATCHES = 16  # chunks are embedded in groups of this many model batches

# Writers (CLI runs, app uploads, deletes) in one process take turns.
_write_lock = threading.RLock()


@dataclass
class IngestReport:
    files_seen: int = 0
    files_added: int = 0
    files_unchanged: int = 0
    files_replaced: int = 0
    files_removed: int = 0
    files_skipped: int = 0
    chunks_written: int = 0
    seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)  # {"file": ..., "reason": ...}
    # Not part of the JSON report: files of unsupported types found while walking folders.
    ignored: list[str] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("ignored")
        data["seconds"] = round(self.seconds, 3)
        return data

    def skip(self, file: str, reason: str) -> None:
        self.files_skipped += 1
        self.skipped.append({"file": file, "reason": reason})


@dataclass(frozen=True)
class SourceFile:
    path: Path
    root: Path
    source: str  # path relative to root, posix

    @property
    def key(self) -> tuple[str, str]:
        return (self.root.as_posix(), self.source)


@dataclass
class _Stored:
    points: int = 0
    file_hashes: set = field(default_factory=set)
    chunk_counts: set = field(default_factory=set)
    chunkings: set = field(default_factory=set)
    ids: set = field(default_factory=set)  # point ids, deleted once the new chunks are written


def point_id(source: str, chunk_index: int, content_hash: str, root: str = "") -> str:
    """uuid5 of (source, chunk_index, content_hash), and of the root where it is not empty:
    the same file under two roots (a corpus file uploaded again) must not share points, or
    each root's next run would overwrite the other's and re-embed it."""
    key = f"{source}\x1f{chunk_index}\x1f{content_hash}"
    return str(uuid.uuid5(POINT_NAMESPACE, f"{root}\x1e{key}" if root else key))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ignored_name(name: str) -> bool:
    return (
        name.startswith((".", "~$", "~lock"))
        or name.endswith(("~", ".tmp", ".part"))
        # A folder's provenance note (data/corpus/ecfr/SOURCES.md) is about the documents,
        # not one of them: an answer must never cite it as FCC text.
        or name.lower() == SOURCES_NOTE.lower()
    )


# Finding files ---------------------------------------------------------------------------------


def discover(
    paths: Iterable[Path | str], root: Path | None, report: IngestReport
) -> tuple[list[SourceFile], list[tuple[Path, str]]]:
    """Files to ingest, and the (root, source prefix) scopes whose vanished files get removed."""
    files: dict[tuple[str, str], SourceFile] = {}
    scopes: list[tuple[Path, str]] = []
    fixed_root = Path(root).expanduser().resolve() if root is not None else None
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if not path.exists():
            report.files_seen += 1
            report.skip(str(raw), "no such file or folder")
            continue
        base = path if path.is_dir() else path.parent
        file_root = fixed_root if fixed_root and base.is_relative_to(fixed_root) else base
        if fixed_root and file_root != fixed_root:
            log.warning(
                "%s is outside the ingest root %s; using %s as its root", path, fixed_root, base
            )
        if path.is_dir():
            prefix = path.relative_to(file_root).as_posix()
            scopes.append((file_root, "" if prefix == "." else prefix))
            for candidate in sorted(path.rglob("*")):
                relative = candidate.relative_to(path)
                if any(_ignored_name(part) for part in relative.parts) or not candidate.is_file():
                    continue
                if candidate.suffix.lower() not in LOADERS:
                    if candidate.suffix.lower() in UNSUPPORTED_HINTS:
                        report.files_seen += 1
                        report.skip(
                            candidate.relative_to(file_root).as_posix(),
                            UNSUPPORTED_HINTS[candidate.suffix.lower()],
                        )
                    else:
                        report.ignored.append(candidate.relative_to(file_root).as_posix())
                    continue
                item = SourceFile(candidate, file_root, candidate.relative_to(file_root).as_posix())
                files.setdefault(item.key, item)
        else:
            item = SourceFile(path, file_root, path.relative_to(file_root).as_posix())
            files.setdefault(item.key, item)
    return list(files.values()), scopes


# Reading what is stored ------------------------------------------------------------------------


def _scroll(
    client: QdrantClient, collection: str, query_filter: models.Filter | None, payload
) -> Iterator[models.Record]:
    offset = None
    while True:
        records, offset = client.scroll(
            collection,
            scroll_filter=query_filter,
            limit=SCROLL_PAGE,
            offset=offset,
            with_payload=payload,
            with_vectors=False,
        )
        yield from records
        if offset is None:
            return


def _stored_state(client: QdrantClient, collection: str, roots: set[str]) -> dict:
    stored: dict[tuple[str, str], _Stored] = {}
    fields = [
        f"{METADATA_KEY}.{name}"
        for name in ("source", "root", "file_hash", "chunk_count", "chunking")
    ]
    for root in sorted(roots):
        for record in _scroll(client, collection, metadata_filter(root=root), fields):
            meta = (record.payload or {}).get(METADATA_KEY, {})
            entry = stored.setdefault((meta.get("root"), meta.get("source")), _Stored())
            entry.points += 1
            entry.ids.add(str(record.id))
            entry.file_hashes.add(meta.get("file_hash"))
            entry.chunk_counts.add(meta.get("chunk_count"))
            entry.chunkings.add(meta.get("chunking"))
    return stored


def _source_filter(root: str, source: str) -> models.Filter:
    return metadata_filter(root=root, source=source)


# Writing ---------------------------------------------------------------------------------------


class _Writer:
    """Embeds chunks in large groups and upserts them in batches."""

    def __init__(
        self, client, collection: str, settings: Settings, recreate: bool, progress: bool = False
    ):
        self.client = client
        self.progress = progress
        self.collection = collection
        self.settings = settings
        self.recreate = recreate
        self.ready = False
        self.pending: list[tuple[Chunk, dict]] = []
        # The stored point ids of the changed files in `pending`, removed (less the ids the
        # new chunks overwrite) only after the flush that writes their new chunks.
        self.stale: list[set[str]] = []
        self.written = 0
        self._model = None
        self._chunker: Chunker | None = None

    @property
    def model(self):
        if self._model is None:
            self._model = get_sentence_model(self.settings)
        return self._model

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            # Its own tokenizer: the shared one is also encoding queries in other threads.
            tokenizer = get_chunking_tokenizer(self.settings)
            window = min(self.model.max_seq_length or 512, tokenizer.model_max_length or 512)
            self._chunker = Chunker(
                tokenizer,
                self.settings.chunk_tokens,
                self.settings.chunk_overlap_tokens,
                window,
            )
        return self._chunker

    @property
    def chunking_signature(self) -> str:
        s = self.settings
        text = f"{CHUNKER_VERSION}|{s.chunk_tokens}|{s.chunk_overlap_tokens}|{s.embedding_model}"
        # The keyword model's parameters: changing them re-indexes too.
        text += f"|{keyword_signature()}"
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def ensure(self) -> None:
        if not self.ready:
            dim = embedding_dim(self.settings)
            ensure_collection(self.client, self.collection, int(dim), recreate=self.recreate)
            _relax_embedded_fsync(self.client, self.collection)
            self.ready = True

    def delete(self, query_filter: models.Filter) -> None:
        _relax_embedded_fsync(self.client, self.collection)
        self.client.delete(
            self.collection, points_selector=models.FilterSelector(filter=query_filter), wait=True
        )

    def add(
        self,
        item: SourceFile,
        file_hash: str,
        title: str,
        doc_type: str,
        chunks: list[Chunk],
        replaces: set[str] | None = None,
        as_of: str | None = None,
    ):
        """Queue a file's chunks; `replaces`: the point ids of its stored version, deleted
        after the flush that writes these (all of a file's chunks go in one flush)."""
        if replaces:
            self.stale.append(set(replaces))
        for index, chunk in enumerate(chunks):
            content_hash = sha256_hex(chunk.text.encode())
            metadata = {
                "source": item.source,
                "page": chunk.page,
                "section": chunk.section,
                "part": chunk.part,
                "subpart": chunk.subpart,
                "heading": chunk.heading,
                "chunk_index": index,
                "chunk_count": len(chunks),
                "char_start": chunk.char_start,
                "para_path": chunk.para_path,
                "content_hash": content_hash,
                "file_hash": file_hash,
                "doc_type": doc_type,
                "title": title,
                "as_of": as_of,
                "root": item.root.as_posix(),
                "chunking": self.chunking_signature,
            }
            self.pending.append((chunk, metadata))
        if len(self.pending) >= self.settings.embed_batch_size * ENCODE_GROUP_BATCHES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            self._delete_stale(set())
            return
        self.ensure()
        pending, self.pending = self.pending, []
        vectors = self.model.encode(
            [chunk.embed_text for chunk, _ in pending],
            batch_size=self.settings.embed_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            # The file bar waits while a group is embedded (a first ingest: minutes on a CPU).
            show_progress_bar=self.progress,
        )
        points = [
            models.PointStruct(
                id=point_id(
                    meta["source"], meta["chunk_index"], meta["content_hash"], meta["root"]
                ),
                vector={DENSE: vector.tolist(), SPARSE: sparse_document_vector(chunk.embed_text)},
                payload={CONTENT_KEY: chunk.text, METADATA_KEY: meta},
            )
            for (chunk, meta), vector in zip(pending, vectors, strict=True)
        ]
        for start in range(0, len(points), UPSERT_BATCH):
            self.client.upsert(
                self.collection, points=points[start : start + UPSERT_BATCH], wait=True
            )
        self.written += len(points)
        self._delete_stale({str(point.id) for point in points})

    def _delete_stale(self, written: set[str]) -> None:
        stale, self.stale = self.stale, []
        ids = sorted(set().union(*stale) - written) if stale else []
        if not ids:
            return
        _relax_embedded_fsync(self.client, self.collection)
        for start in range(0, len(ids), UPSERT_BATCH * 4):
            self.client.delete(
                self.collection,
                points_selector=models.PointIdsList(points=ids[start : start + UPSERT_BATCH * 4]),
                wait=True,
            )


def _relax_embedded_fsync(client: QdrantClient, collection: str) -> None:
    """Let the embedded store commit without an fsync per point.

    Local-mode Qdrant commits every point in its own SQLite transaction; with SQLite's
    default journal that is one fsync per chunk (~18 ms here, slower than embedding the
    chunk). WAL with synchronous=NORMAL survives a crash of this process and never corrupts
    the file; a power cut can lose the last commits, which the next run re-ingests (a file
    whose stored chunk count is short counts as changed). No-op for a server.
    """
    local = getattr(client, "_client", None)
    collections = getattr(local, "collections", None)
    storage = getattr(
        getattr((collections or {}).get(collection), "storage", None), "storage", None
    )
    if storage is None:
        return
    try:
        storage.execute("PRAGMA journal_mode=WAL")
        storage.execute("PRAGMA synchronous=NORMAL")
    except Exception as error:  # internals of qdrant-client's local mode may change
        log.debug("could not relax the embedded store's fsync: %s", error)


def ingest_paths(
    paths: list[Path | str],
    collection: str | None = None,
    recreate: bool = False,
    progress: bool = True,
    settings: Settings | None = None,
    root: Path | None = None,
) -> IngestReport:
    """Ingest files and folders (recursively) into `collection`; see the module docstring.

    Sources are paths relative to `root` (default: each folder given, or a file's folder).
    Raises core.store.StoreUnavailableError when the store cannot be opened.
    """
    settings = settings or get_settings()
    collection = collection or settings.collection_name
    started = time.perf_counter()
    report = IngestReport()
    files, scopes = discover(paths, root, report)
    report.files_seen += len(files)
    client = get_client(settings)
    with _write_lock:
        writer = _Writer(client, collection, settings, recreate, progress)
        if recreate:
            writer.ensure()
        stored = (
            _stored_state(
                client, collection, {f.key[0] for f in files} | {r.as_posix() for r, _ in scopes}
            )
            if client.collection_exists(collection)
            else {}
        )
        _ingest_files(files, stored, writer, report, progress)
        writer.flush()
        _remove_vanished(files, scopes, stored, writer, report)
        if writer.written:
            settle(client, collection)  # the Edge engine builds its indexes
    report.chunks_written = writer.written
    report.seconds = time.perf_counter() - started
    if report.ignored:
        log.debug("Ignored %d file(s) of unsupported types", len(report.ignored))
    return report


def _ingest_files(files, stored, writer: _Writer, report: IngestReport, progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(files, desc="Ingesting", unit="file", disable=not progress, dynamic_ncols=True)
    chunks_total = 0
    for item in bar:
        bar.set_postfix_str(item.source[-40:], refresh=False)
        try:
            data = item.path.read_bytes()
        except OSError as error:
            report.skip(item.source, f"unreadable ({error.strerror or error})")
            continue
        file_hash = sha256_hex(data)
        previous = stored.get(item.key)
        if previous and _is_current(previous, file_hash, writer.chunking_signature):
            report.files_unchanged += 1
            continue
        try:
            loaded = load_file(item.path, data)
            chunks = writer.chunker.chunk(loaded)
            if not chunks:
                raise SkipFile("no text found")
        except SkipFile as reason:
            kept = (
                f"; kept the {previous.points} chunks of its previous version" if previous else ""
            )
            report.skip(item.source, f"{reason}{kept}")
            continue
        if previous:
            report.files_replaced += 1
        else:
            report.files_added += 1
        # Write first, then delete: the old points go after the flush that writes these.
        writer.add(
            item,
            file_hash,
            loaded.title,
            loaded.doc_type,
            chunks,
            replaces=previous.ids if previous else None,
            as_of=loaded.as_of,
        )
        chunks_total += len(chunks)
        bar.set_postfix(chunks=chunks_total, refresh=False)
    bar.close()


def _is_current(previous: _Stored, file_hash: str, chunking: str) -> bool:
    return (
        previous.file_hashes == {file_hash}
        and previous.chunkings == {chunking}
        and previous.chunk_counts == {previous.points}
    )


def _remove_vanished(files, scopes, stored, writer: _Writer, report: IngestReport) -> None:
    present = {item.key for item in files}
    for root, prefix in scopes:
        for key in sorted(k for k in stored if k[0] == root.as_posix()):
            source = key[1] or ""
            inside = not prefix or source == prefix or source.startswith(prefix + "/")
            if inside and key not in present:
                writer.delete(_source_filter(*key))
                report.files_removed += 1
                present.add(key)


# Reading back ----------------------------------------------------------------------------------


def delete_source(
    source: str,
    collection: str | None = None,
    settings: Settings | None = None,
    root: str | Path | None = None,
) -> int:
    """Remove the chunks of `source` under `root` (an ingest root as stored; None: in every
    root); return how many points were removed. Files on disk are left alone."""
    settings = settings or get_settings()
    collection = collection or settings.collection_name
    client = get_client(settings)
    with _write_lock:
        if not client.collection_exists(collection):
            return 0
        root_key = Path(root).as_posix() if root is not None else None
        query_filter = metadata_filter(source=source, root=root_key)
        count = client.count(collection, count_filter=query_filter, exact=True).count
        if count:
            client.delete(
                collection, points_selector=models.FilterSelector(filter=query_filter), wait=True
            )
        return count


def list_sources(
    collection: str | None = None, settings: Settings | None = None, by_root: bool = False
) -> list[dict]:
    """One entry per ingested source: {source, chunks, doc_type, title, root, file_hash,
    part, as_of}, sorted by source. `root`, `file_hash`, `part` (the CFR part) and `as_of`
    (the text's point-in-time date) are None where the source's chunks disagree
    (the same source under two roots; old and new chunks while a re-ingest is under way).
    by_root=True: one entry per (root, source) instead, sorted by root then source."""
    settings = settings or get_settings()
    collection = collection or settings.collection_name
    client = get_client(settings)
    if not client.collection_exists(collection):
        return []
    fields = [
        f"{METADATA_KEY}.{name}"
        for name in ("source", "doc_type", "title", "root", "file_hash", "part", "as_of")
    ]
    sources: dict[tuple, dict] = {}
    for record in _scroll(client, collection, None, fields):
        meta = (record.payload or {}).get(METADATA_KEY, {})
        key = (
            (meta.get("root") or "", meta.get("source") or "")
            if by_root
            else (
                "",
                meta.get("source") or "",
            )
        )
        entry = sources.setdefault(
            key,
            {
                "source": meta.get("source"),
                "chunks": 0,
                "doc_type": meta.get("doc_type"),
                "title": meta.get("title"),
                "root": meta.get("root"),
                "file_hash": meta.get("file_hash"),
                "part": meta.get("part"),
                "as_of": meta.get("as_of"),
            },
        )
        entry["chunks"] += 1
        for name in ("root", "file_hash", "part", "as_of"):
            if entry[name] != meta.get(name):
                entry[name] = None
    return [
        sources[key] for key in sorted(sources, key=lambda k: (k[1], k[0]) if not by_root else k)
    ]


def document_text(
    source: str, collection: str | None = None, settings: Settings | None = None
) -> list[dict]:
    """All chunks of `source` ordered by chunk_index, as RetrievedChunk.to_dict() dicts."""
    settings = settings or get_settings()
    collection = collection or settings.collection_name
    client = get_client(settings)
    if not client.collection_exists(collection):
        return []
    records = list(_scroll(client, collection, metadata_filter(source=source), True))
    chunks = [RetrievedChunk.from_record(record) for record in records]
    chunks.sort(key=lambda c: (c.metadata.get("root") or "", c.chunk_index or 0))
    return [chunk.to_dict() for chunk in chunks]
