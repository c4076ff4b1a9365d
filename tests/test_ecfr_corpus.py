"""The default corpus: the eCFR text of 47 CFR Parts 97 and 80 in data/corpus/ecfr.

The copy is the published text (every file checked against the manifest's sha256), its
SOURCES.md is provenance, never a document, the point-in-time date reaches every chunk, and
the chat's welcome and starters say what is indexed. The answers to the starters are checked
in the browser test (tests/test_browser.py) over an ingest of this folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil

import pytest

from tests.conftest import ECFR_CORPUS, SAMPLE_CORPUS

DATE = "2024-11-14"


def _manifest() -> list[dict]:
    with (ECFR_CORPUS / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_section_is_the_published_text():
    rows = _manifest()
    files = sorted(ECFR_CORPUS.glob("part*/*.xml"))
    assert len(rows) == len(files) == 66 + 369
    for row in rows:
        # The manifest names the shared folder's layout (part97/xml/97.1.xml): here part97/97.1.xml.
        path = ECFR_CORPUS / row["xml_file"].replace("/xml/", "/")
        data = path.read_bytes()
        assert hashlib.sha256(data.rstrip(b"\n")).hexdigest() == row["sha256_xml_fragment"], path
    assert {p.parent.name for p in files} == {"part97", "part80"}
    # Only the per-section XML: no text renderings, no whole-part source files.
    assert not list(ECFR_CORPUS.rglob("*.txt")) and not list(ECFR_CORPUS.rglob("_*"))
    sources = (ECFR_CORPUS / "SOURCES.md").read_text()
    for needed in ("public domain", "not an official legal edition", "01ad8dd04fbb", DATE):
        assert needed in sources, needed


def test_no_sample_document_is_in_the_default_corpus():
    default = ECFR_CORPUS.parent
    names = {p.name for p in default.rglob("*") if p.is_file()}
    assert not names & {p.name for p in SAMPLE_CORPUS.iterdir()}
    assert {p.suffix for p in default.rglob("*") if p.is_file()} == {".xml", ".md", ".csv", ".json"}


def test_the_loader_reads_the_date_beside_the_files(tmp_path):
    from ingest.ecfr import point_in_time
    from ingest.loaders import load_file

    path = ECFR_CORPUS / "part97" / "97.119.xml"
    loaded = load_file(path, path.read_bytes())
    assert loaded.doc_type == "ecfr_xml" and loaded.as_of == DATE
    assert loaded.title == "§ 97.119 Station identification."
    (segment,) = loaded.segments
    assert (segment.section, segment.part) == ("97.119", "97")
    assert "at least every 10 minutes during a communication" in segment.text
    # Without a SOURCES.md nothing states a date (the XML has only _SUBSTITUTE_DATE_) ...
    alone = tmp_path / "97.119.xml"
    shutil.copy(path, alone)
    assert load_file(alone, alone.read_bytes()).as_of is None
    # ... unless the download's own path holds one.
    dated = path.read_bytes().replace(b"_SUBSTITUTE_DATE_", b"2025-01-02")
    assert point_in_time(alone, dated) == "2025-01-02"


def test_sources_note_is_not_indexed_and_each_chunk_carries_the_date(tmp_path):
    from ingest.pipeline import document_text, ingest_paths, list_sources

    folder = tmp_path / "ecfr"
    (folder / "part97").mkdir(parents=True)
    (folder / "part80").mkdir()
    for name in ("SOURCES.md", "manifest.csv", "starters.json"):
        shutil.copy(ECFR_CORPUS / name, folder / name)
    for section in ("part97/97.119.xml", "part80/80.310.xml"):
        shutil.copy(ECFR_CORPUS / section, folder / section)
    report = ingest_paths([tmp_path], collection="test_ecfr_dates", progress=False)
    assert (report.files_seen, report.files_added, report.files_skipped) == (2, 2, 0)
    listed = {e["source"]: e for e in list_sources("test_ecfr_dates")}
    assert set(listed) == {"ecfr/part97/97.119.xml", "ecfr/part80/80.310.xml"}
    assert {(e["part"], e["as_of"]) for e in listed.values()} == {("97", DATE), ("80", DATE)}
    chunks = document_text("ecfr/part97/97.119.xml", collection="test_ecfr_dates")
    assert chunks and all(c["metadata"]["as_of"] == DATE for c in chunks)
    again = ingest_paths([tmp_path], collection="test_ecfr_dates", progress=False)
    assert (again.files_unchanged, again.chunks_written) == (2, 0)


def test_welcome_names_the_parts_and_their_date(monkeypatch):
    from ui import welcome

    listed = [
        {"source": "ecfr/part97/97.119.xml", "doc_type": "ecfr_xml", "part": "97"},
        {"source": "ecfr/part80/80.310.xml", "doc_type": "ecfr_xml", "part": "80"},
        {"source": "ecfr/part97/97.313.xml", "doc_type": "ecfr_xml", "part": "97"},
        {"source": "notes.md", "doc_type": "markdown", "part": None},
    ]
    indexed = welcome.Corpus(4, 9, (), ecfr_documents=3, parts=("80", "97"), dates=(DATE,))
    assert welcome.ecfr_line(indexed) == (
        f"**47 CFR Parts 80 and 97** (eCFR, {DATE}) and 1 other document"
    )
    undated = welcome.Corpus(1, 2, (), ecfr_documents=1, parts=("15",))
    assert welcome.ecfr_line(undated) == "**47 CFR Part 15** (eCFR, date not stated)"

    # The corpus's own starters, while the sections they ask about are indexed.
    monkeypatch.setattr(welcome, "_corpus_root", lambda: ECFR_CORPUS.parent)
    starters = welcome.shipped_starters(listed)
    assert [s.label.split()[1] for s in starters] == ["97.119", "97.313", "80.310"]
    assert all(s.message.endswith("?") for s in starters)
    assert welcome.shipped_starters([listed[-1]]) == []  # another corpus: none of them


@pytest.mark.parametrize("entry", json.loads((ECFR_CORPUS / "starters.json").read_text()))
def test_each_starter_names_a_real_section(entry):
    path = ECFR_CORPUS / entry["source"]
    section = entry["label"].split()[1]
    assert entry["label"].startswith("§ ") and path.stem == section
    assert f"&#xA7; {section} " in path.read_text()
