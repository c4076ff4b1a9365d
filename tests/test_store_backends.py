"""The same store behaviour on both embedded engines (STORE_ENGINE=edge | local), on real
files from data/samples through the real pipeline and retriever: upsert, idempotent
re-ingest, replace, delete by source, count, list sources, dense / keyword / hybrid search,
the keyword model in the chunk signature, the folder lock, and points that move between
engines unchanged."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE_CORPUS

FILES = (
    "part15_definitions.txt",
    "part15_labelling.html",
    "kdb_174176_ac_power_line_conducted.md",
)
COLLECTION = "backend_test"


@pytest.fixture(scope="module", params=["edge", "local"])
def store(request, tmp_path_factory):
    """A private embedded store of one engine, the three files ingested once."""
    from core.settings import get_settings
    from core.store import get_client
    from ingest.pipeline import ingest_paths

    docs = tmp_path_factory.mktemp(f"docs-{request.param}")
    for name in FILES:
        shutil.copy(SAMPLE_CORPUS / name, docs / name)
    settings = get_settings().model_copy(
        update={
            "qdrant_path": tmp_path_factory.mktemp(f"qdrant-{request.param}"),
            "store_engine": request.param,
        }
    )
    report = ingest_paths([docs], collection=COLLECTION, progress=False, settings=settings)
    assert report.files_added == len(FILES) and report.files_skipped == 0, report.skipped
    client = get_client(settings)
    yield {"engine": request.param, "settings": settings, "docs": docs, "report": report}
    client.close()


def _retriever(store):
    from chains.retrieval import Retriever

    return Retriever(COLLECTION, settings=store["settings"])


def _ingest(store, **kwargs):
    from ingest.pipeline import ingest_paths

    return ingest_paths(
        [store["docs"]], collection=COLLECTION, progress=False, settings=store["settings"], **kwargs
    )


def test_client_is_the_chosen_engine(store):
    from qdrant_client import QdrantClient

    from core.store import EdgeClient, get_client

    client = get_client(store["settings"])
    assert isinstance(client, EdgeClient if store["engine"] == "edge" else QdrantClient)


def test_upsert_count_and_list_sources(store):
    from ingest.pipeline import list_sources

    written = store["report"].chunks_written
    assert written > len(FILES)
    assert _retriever(store).count() == written
    sources = list_sources(COLLECTION, settings=store["settings"])
    assert [s["source"] for s in sources] == sorted(FILES)
    assert sum(s["chunks"] for s in sources) == written
    assert all(s["file_hash"] and s["root"] for s in sources)


def test_reingest_is_idempotent(store):
    before = _retriever(store).count()
    report = _ingest(store)
    assert report.files_unchanged == len(FILES)
    assert report.chunks_written == 0
    assert _retriever(store).count() == before


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_returns_the_right_chunk(store, mode):
    hits = _retriever(store).search(
        "Which labelling statement goes on a device too small for it?", k=3, mode=mode
    )
    assert hits and hits[0].source == "part15_labelling.html"
    assert all(hit.dense_score is not None for hit in hits)
    hits = _retriever(store).search("peak detector conducted emissions", k=3, mode=mode)
    assert hits[0].source == "kdb_174176_ac_power_line_conducted.md"


def test_keyword_search_matches_a_section_id(store):
    hits = _retriever(store).search("15.13", k=2, mode="bm25")
    assert hits and hits[0].section == "15.13"
    hybrid = _retriever(store).search("What does 15.13 say?", k=2, mode="hybrid")
    assert hybrid[0].section == "15.13"


def test_filters_mmr_and_absent_terms(store):
    retriever = _retriever(store)
    hits = retriever.search("label", k=4, filters={"source": "part15_definitions.txt"})
    assert hits and {hit.source for hit in hits} == {"part15_definitions.txt"}
    assert len(retriever.mmr("conducted emission limits", k=2)) == 2
    assert retriever.absent_terms(["zzyzzx", "radiator"]) == ["zzyzzx"]
    assert retriever.missing_references("What do § 15.19 and § 15.999 say?") == ["§ 15.999"]


def test_points_move_between_engines_unchanged(store, tmp_path):
    """Vector names, payload and ids are the same on both engines: copy every point into
    the other engine and the same search finds the same chunks. (Before the tests that
    replace and delete points: the IDF of a collection with deleted points may count them
    until the engine vacuums its segments, a copy's does not.)"""
    from qdrant_client import QdrantClient, models

    from chains.retrieval import Retriever
    from core.store import DENSE, SPARSE, EdgeClient, embedding_dim, ensure_collection, get_client

    source = get_client(store["settings"])
    target = QdrantClient(path=str(tmp_path)) if store["engine"] == "edge" else EdgeClient(tmp_path)
    try:
        ensure_collection(target, COLLECTION, embedding_dim(store["settings"]))
        records, offset = [], None
        while True:
            page, offset = source.scroll(
                COLLECTION, limit=64, offset=offset, with_payload=True, with_vectors=True
            )
            records += page
            if offset is None:
                break
        target.upsert(
            COLLECTION,
            points=[
                models.PointStruct(id=r.id, vector=r.vector, payload=r.payload) for r in records
            ],
        )
        assert isinstance(records[0].vector[SPARSE], models.SparseVector)
        assert len(records[0].vector[DENSE]) == embedding_dim(store["settings"])
        query = "What must the label of a small device say?"
        for mode in ("dense", "bm25", "hybrid"):
            here = [h.id for h in _retriever(store).search(query, k=3, mode=mode)]
            there = Retriever(COLLECTION, settings=store["settings"], client=target)
            assert [h.id for h in there.search(query, k=3, mode=mode)] == here, mode
    finally:
        target.close()


def test_changed_file_is_replaced_and_deleted_by_source(store):
    from ingest.pipeline import delete_source, document_text, list_sources

    path = store["docs"] / "part15_labelling.html"
    original = path.read_text()
    before = {
        c["id"] for c in document_text("part15_labelling.html", COLLECTION, store["settings"])
    }
    path.write_text(original.replace("Labelling requirements", "Labelling requirements (rev)"))
    report = _ingest(store)
    assert report.files_replaced == 1 and report.files_unchanged == len(FILES) - 1
    after = document_text("part15_labelling.html", COLLECTION, store["settings"])
    assert after and len({c["metadata"]["file_hash"] for c in after}) == 1
    assert {c["id"] for c in after} != before
    total = _retriever(store).count()
    removed = delete_source("part15_labelling.html", COLLECTION, store["settings"])
    assert removed == len(after)
    assert _retriever(store).count() == total - removed
    names = [s["source"] for s in list_sources(COLLECTION, settings=store["settings"])]
    assert "part15_labelling.html" not in names
    path.write_text(original)
    assert _ingest(store).files_added == 1


def test_keyword_model_is_in_the_chunk_signature(store, monkeypatch):
    import core.store

    monkeypatch.setattr(core.store, "KEYWORD_MODEL", core.store.KeywordModel(k=1.5))
    report = _ingest(store)
    assert report.files_replaced == len(FILES)  # re-indexed with the new keyword weights
    monkeypatch.undo()
    assert _ingest(store).files_replaced == len(FILES)  # and back


def test_second_process_gets_the_lock_error(store):
    from core.store import StoreLockedError, _open_client

    path = Path(store["settings"].qdrant_location)
    code = (
        "import sys\n"
        "from core.store import StoreLockedError, EdgeClient\n"
        "try:\n"
        f"    EdgeClient({str(path)!r})\n"
        "except StoreLockedError as error:\n"
        "    print(error); sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3, done.stderr
    assert "in use by another process" in done.stdout
    assert "ingest through the app" in done.stdout and "QDRANT_URL" in done.stdout
    if store["engine"] == "edge":  # in this process too, while the client holds the folder
        with pytest.raises(StoreLockedError):
            _open_client(store["settings"])
