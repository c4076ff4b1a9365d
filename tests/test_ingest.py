"""Ingestion on real files: every format, idempotent re-runs, bad input, eCFR XML, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT

ECFR_XML = """<?xml version="1.0"?>
<DIV5 N="15" TYPE="PART">
<HEAD>PART 15&#x2014;RADIO FREQUENCY DEVICES</HEAD>
<DIV6 N="B" TYPE="SUBPART">
<HEAD>Subpart B&#x2014;Unintentional Radiators</HEAD>
<DIV8 N="15.107" TYPE="SECTION">
<HEAD>&#xA7; 15.107 Conducted limits.</HEAD>
<P>(a) The radio frequency voltage conducted back onto the AC power line must not exceed the limits in the table.</P>
<P>(b) For a Class A digital device the limits of the second table apply.</P>
</DIV8>
<DIV8 N="15.109" TYPE="SECTION">
<HEAD>&#xA7; 15.109 Radiated emission limits.</HEAD>
<P>(a) The field strength of radiated emissions from unintentional radiators at a distance of 3 meters shall not exceed the values in the table.</P>
<DIV><TABLE><TR><TH>Frequency (MHz)</TH><TH>Field strength (&#x3BC;V/m)</TH></TR>
<TR><TD>30-88</TD><TD>100</TD></TR></TABLE></DIV>
</DIV8>
</DIV6>
</DIV5>
"""

HTML = """<!DOCTYPE html><html><head><title>Labelling page</title><script>var x = 1;</script></head>
<body><h1>Labelling overview</h1><p>Intro text about labels.</p>
<h2>&#xA7; 15.19 Labelling requirements.</h2>
<p>(a) A device must bear the compliance statement in a conspicuous location.</p>
<table><tr><td>Receiver</td><td>Statement 1</td></tr></table>
<h2>Background</h2><p>Editorial background that belongs to no section.</p>
</body></html>"""

MARKDOWN = """# Part 15 notes

## § 15.5 General conditions of operation.

(a) Persons operating intentional or unintentional radiators shall not be deemed to have any vested right.

(b) Operation is subject to the condition that no harmful interference is caused.
"""

TEXT = """§ 15.203 Antenna requirement.

An intentional radiator shall be designed to ensure that no antenna other than that furnished by the responsible party shall be used with the device.
"""


def _make_pdf(path: Path, pages: list[list[str]], password: str | None = None) -> Path:
    from reportlab.lib.pagesizes import letter
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), pagesize=letter, encrypt=password)
    for lines in pages:
        y = 720
        for line in lines:
            pdf.drawString(72, y, line)
            y -= 16
        pdf.showPage()
    pdf.save()
    return path


def _make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.core_properties.title = "Permissive changes"
    document.add_heading("§ 2.1043 Changes in certificated equipment.", level=1)
    document.add_paragraph("(a) Certain changes may be made without a new FCC ID.")
    document.add_heading("Class II changes", level=2)
    document.add_paragraph("A Class II permissive change requires a filing with test data.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Change"
    table.rows[0].cells[1].text = "Class II"
    document.save(str(path))
    return path


def _write_good_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _make_pdf(
        folder / "guide.pdf",
        [
            ["RF exposure guide", "1. Introduction", "This guide explains SAR testing of phones."],
            [
                "§ 2.1093 Radiofrequency radiation exposure evaluation: portable devices.",
                "(d) The SAR limit is 1.6 W/kg averaged over 1 gram of tissue.",
            ],
        ],
    )
    (folder / "page.html").write_text(HTML)
    (folder / "notes.md").write_text(MARKDOWN)
    (folder / "antenna.txt").write_text(TEXT)
    _make_docx(folder / "changes.docx")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "part15.xml").write_text(ECFR_XML)
    return folder


def _chunks(source: str, collection: str) -> list[dict]:
    from ingest.pipeline import document_text

    return document_text(source, collection=collection)


# Formats -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> tuple[Path, str, object]:
    from ingest.pipeline import ingest_paths

    folder = _write_good_files(tmp_path_factory.mktemp("formats") / "docs")
    report = ingest_paths([folder], collection="test_formats", progress=False)
    return folder, "test_formats", report


def test_every_format_is_ingested(formats):
    _, collection, report = formats
    assert report.skipped == []
    assert (report.files_seen, report.files_added, report.files_skipped) == (6, 6, 0)
    from ingest.pipeline import list_sources

    sources = {entry["source"]: entry for entry in list_sources(collection)}
    assert set(sources) == {
        "guide.pdf",
        "page.html",
        "notes.md",
        "antenna.txt",
        "changes.docx",
        "sub/part15.xml",
    }
    assert {s: e["doc_type"] for s, e in sources.items()} == {
        "guide.pdf": "pdf",
        "page.html": "html",
        "notes.md": "markdown",
        "antenna.txt": "text",
        "changes.docx": "docx",
        "sub/part15.xml": "ecfr_xml",
    }
    assert sum(e["chunks"] for e in sources.values()) == report.chunks_written


def test_pdf_pages_are_one_based_and_sections_detected(formats):
    chunks = _chunks("guide.pdf", formats[1])
    pages = {c["page"] for c in chunks}
    assert pages == {1, 2}
    page2 = [c for c in chunks if c["page"] == 2]
    assert page2 and all(c["section"] == "2.1093" for c in page2)
    assert all(c["metadata"]["part"] == "2" for c in page2)
    assert "1.6 W/kg" in " ".join(c["text"] for c in page2)
    page1 = [c for c in chunks if c["page"] == 1]
    assert all(c["section"] is None for c in page1)


def test_html_headings_and_sections(formats):
    chunks = _chunks("page.html", formats[1])
    text = " ".join(c["text"] for c in chunks)
    assert "var x" not in text  # script dropped
    by_section = {c["section"]: c for c in chunks}
    assert by_section["15.19"]["heading"] == "§ 15.19 Labelling requirements."
    assert "Receiver | Statement 1" in by_section["15.19"]["text"]
    # A heading of the same level after the section ends it.
    background = [c for c in chunks if "Editorial background" in c["text"]]
    assert background and background[0]["section"] is None
    assert background[0]["heading"] == "Background"
    assert chunks[0]["metadata"]["title"] == "Labelling page"


def test_markdown_text_and_docx_metadata(formats):
    collection = formats[1]
    md = _chunks("notes.md", collection)
    assert {c["section"] for c in md if "vested right" in c["text"]} == {"15.5"}
    txt = _chunks("antenna.txt", collection)
    assert [c["section"] for c in txt] == ["15.203"]
    assert txt[0]["metadata"]["part"] == "15"
    docx = _chunks("changes.docx", collection)
    assert docx[0]["metadata"]["title"] == "Permissive changes"
    class2 = [c for c in docx if "Class II permissive change" in c["text"]]
    assert class2 and class2[0]["heading"] == "Class II changes"
    # A lower-level heading inside a section keeps the section.
    assert class2[0]["section"] == "2.1043"


def test_ecfr_xml_sections_and_metadata_contract(formats):
    chunks = _chunks("sub/part15.xml", formats[1])
    assert {c["section"] for c in chunks} == {"15.107", "15.109"}
    first = chunks[0]["metadata"]
    for key in (
        "source",
        "page",
        "section",
        "part",
        "heading",
        "chunk_index",
        "content_hash",
        "file_hash",
        "doc_type",
        "title",
        "root",
    ):
        assert key in first, key
    assert first["root"] == (formats[0]).resolve().as_posix()
    assert first["part"] == "15" and first["subpart"] == "B"
    assert first["title"] == "PART 15—RADIO FREQUENCY DEVICES"
    assert [c["chunk_index"] for c in chunks] == list(range(len(chunks)))
    table = [c for c in chunks if c["section"] == "15.109"]
    assert "30-88 | 100" in table[-1]["text"]


def test_point_ids_are_deterministic(formats):
    import hashlib

    from ingest.pipeline import point_id

    for chunk in _chunks("notes.md", formats[1]):
        meta = chunk["metadata"]
        assert meta["content_hash"] == hashlib.sha256(chunk["text"].encode()).hexdigest()
        assert chunk["id"] == point_id(
            meta["source"], meta["chunk_index"], meta["content_hash"], meta["root"]
        )


# Idempotency ---------------------------------------------------------------------------------


def test_rerun_unchanged_changed_and_deleted_files(tmp_path):
    from chains.retrieval import Retriever
    from ingest.pipeline import ingest_paths, list_sources

    collection = "test_idempotent"
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text(MARKDOWN)
    (folder / "b.txt").write_text(TEXT)
    (folder / "c.html").write_text(HTML)
    first = ingest_paths([folder], collection=collection, progress=False)
    assert (first.files_added, first.chunks_written > 0) == (3, True)
    total = Retriever(collection).count()
    assert total == first.chunks_written

    second = ingest_paths([folder], collection=collection, progress=False)
    assert (second.files_unchanged, second.chunks_written, second.files_added) == (3, 0, 0)
    assert Retriever(collection).count() == total

    old_b = _chunks("b.txt", collection)
    (folder / "b.txt").write_text(TEXT.replace("antenna", "aerial") + "\nA second paragraph.\n")
    (folder / "c.html").unlink()
    third = ingest_paths([folder], collection=collection, progress=False)
    assert (third.files_replaced, third.files_removed, third.files_unchanged) == (1, 1, 1)
    new_b = _chunks("b.txt", collection)
    assert "aerial" in " ".join(c["text"] for c in new_b)
    assert not {c["id"] for c in old_b} & {c["id"] for c in new_b}
    assert "antenna other than" not in " ".join(c["text"] for c in new_b)
    assert {s["source"] for s in list_sources(collection)} == {"a.md", "b.txt"}
    assert Retriever(collection).count() == sum(s["chunks"] for s in list_sources(collection))

    # A single file ingested with the same root leaves the folder's other sources alone.
    (folder / "d.md").write_text("# D\n\nA new upload about duty cycles.\n")
    fourth = ingest_paths([folder / "d.md"], collection=collection, progress=False, root=folder)
    assert (fourth.files_added, fourth.files_removed) == (1, 0)
    assert {s["source"] for s in list_sources(collection)} == {"a.md", "b.txt", "d.md"}


def test_same_file_under_two_roots_is_stable(tmp_path):
    """A corpus file uploaded again lives under two roots; neither run disturbs the other."""
    from ingest.pipeline import document_text, ingest_paths

    collection = "test_two_roots"
    corpus, uploads = tmp_path / "corpus", tmp_path / "uploads"
    corpus.mkdir()
    uploads.mkdir()
    (corpus / "rules.md").write_text(MARKDOWN)
    (uploads / "rules.md").write_text(MARKDOWN)
    first = ingest_paths([corpus], collection=collection, progress=False)
    upload = ingest_paths(
        [uploads / "rules.md"], collection=collection, progress=False, root=uploads
    )
    assert upload.files_added == 1
    assert len(document_text("rules.md", collection)) == 2 * first.chunks_written
    again = ingest_paths([corpus], collection=collection, progress=False)
    upload_again = ingest_paths(
        [uploads / "rules.md"], collection=collection, progress=False, root=uploads
    )
    assert (again.chunks_written, again.files_unchanged) == (0, 1)
    assert (upload_again.chunks_written, upload_again.files_unchanged) == (0, 1)


def test_delete_source_and_recreate(tmp_path):
    from chains.retrieval import Retriever
    from ingest.pipeline import delete_source, ingest_paths, list_sources

    collection = "test_delete"
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text(MARKDOWN)
    (folder / "b.txt").write_text(TEXT)
    ingest_paths([folder], collection=collection, progress=False)
    chunks_of_a = {s["source"]: s["chunks"] for s in list_sources(collection)}["a.md"]
    removed = delete_source("a.md", collection=collection)
    assert removed == chunks_of_a > 0
    assert [s["source"] for s in list_sources(collection)] == ["b.txt"]
    assert delete_source("a.md", collection=collection) == 0
    # The next run puts the deleted source back; --recreate rebuilds from scratch.
    again = ingest_paths([folder], collection=collection, progress=False)
    assert (again.files_added, again.files_unchanged) == (1, 1)
    rebuilt = ingest_paths([folder / "a.md"], collection=collection, progress=False, recreate=True)
    assert rebuilt.files_added == 1
    assert [s["source"] for s in list_sources(collection)] == ["a.md"]
    assert Retriever(collection).count() == rebuilt.chunks_written


# Bad input -----------------------------------------------------------------------------------


def _write_bad_files(folder: Path) -> None:
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(2000))
    (folder / "garbage.pdf").write_bytes(b"this is not a pdf at all")
    _make_pdf(folder / "locked.pdf", [["Secret text"]], password="secret")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "not_ecfr.xml").write_text("<note><to>Tove</to><body>Hi</body></note>")
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    (folder / "~$lock.docx").write_bytes(b"owner file of an open Word document")
    (folder / ".hidden.md").write_text("# hidden")
    (folder / "data.csv").write_text("a,b\n1,2\n")


def test_bad_files_are_skipped_with_reasons(tmp_path):
    from ingest.pipeline import ingest_paths, list_sources

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.md").write_text(MARKDOWN)
    (folder / "good.txt").write_text(TEXT)
    _write_bad_files(folder)
    report = ingest_paths([folder], collection="test_bad", progress=False)
    reasons = {entry["file"]: entry["reason"] for entry in report.skipped}
    assert set(reasons) == {
        "corrupt.pdf",
        "garbage.pdf",
        "locked.pdf",
        "empty.txt",
        "not_ecfr.xml",
        "broken.docx",
    }
    assert "encrypted" in reasons["locked.pdf"] and "password" in reasons["locked.pdf"]
    assert reasons["empty.txt"] == "empty file"
    assert "not an eCFR" in reasons["not_ecfr.xml"]
    assert "PDF" in reasons["garbage.pdf"] and "PDF" in reasons["corrupt.pdf"]
    assert all("\n" not in reason for reason in reasons.values())
    assert (report.files_added, report.files_skipped, report.files_seen) == (2, 6, 8)
    assert report.ignored == ["data.csv"]
    assert {s["source"] for s in list_sources("test_bad")} == {"good.md", "good.txt"}


def test_pdf_with_owner_password_only_is_read(tmp_path):
    from reportlab.lib.pdfencrypt import StandardEncryption

    from ingest.loaders import load_file

    path = _make_pdf(
        tmp_path / "owner.pdf",
        [["Readable without a password"]],
        password=StandardEncryption("", ownerPassword="owner", canPrint=1),
    )
    loaded = load_file(path, path.read_bytes())
    assert "Readable without a password" in loaded.segments[0].text


# eCFR XML from the shared corpus -------------------------------------------------------------


def test_ecfr_download_one_segment_per_section(shared_corpus):
    from ingest.loaders import load_file

    path = shared_corpus / "_source" / "tarxvftech-47CFR" / "xml" / "part_97.xml"
    loaded = load_file(path, path.read_bytes())
    sections = [s for s in loaded.segments if s.section]
    assert len(sections) == 64  # DIV8 sections; the 2 appendices (DIV9) come without a section
    assert len(loaded.segments) == 66
    by_id = {s.section: s for s in sections}
    power = by_id["97.313"]
    assert (power.part, power.subpart) == ("97", "D")
    assert power.heading == "§ 97.313 Transmitter power standards."
    assert "1.5 kW PEP" in power.text
    assert loaded.title == "PART 97—AMATEUR RADIO SERVICE"
    appendix = loaded.segments[-1]
    assert appendix.section is None and appendix.part == "97"
    assert appendix.heading.startswith("Appendix 2 to Part 97")


def test_ecfr_fragment_file():
    from ingest.loaders import load_file
    from tests.conftest import ECFR_CORPUS

    # The default corpus's copy: the same bytes as the shared corpus's part97/xml/97.305.xml.
    fragment = ECFR_CORPUS / "part97" / "97.305.xml"
    loaded = load_file(fragment, fragment.read_bytes())
    assert len(loaded.segments) == 1
    segment = loaded.segments[0]
    assert (segment.section, segment.part, segment.subpart) == ("97.305", "97", None)
    assert "2200 m | Entire band | RTTY, data | (f)(3)." in segment.text


def test_ecfr_header_file(shared_corpus):
    from ingest.documents import SkipFile
    from ingest.loaders import load_file

    header = shared_corpus / "part97" / "_part97_header.xml"
    with pytest.raises(SkipFile, match="not an eCFR"):
        load_file(header, header.read_bytes())


# Chunk sizes -----------------------------------------------------------------------------------


def _chunker():
    from core.settings import get_settings
    from core.store import get_sentence_model
    from ingest.chunking import Chunker

    model = get_sentence_model()
    settings = get_settings()
    return Chunker(
        model.tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens, model.max_seq_length
    ), model


def test_no_chunk_exceeds_the_embedder_window():
    from ingest.documents import LoadedFile, Segment

    chunker, model = _chunker()
    assert model.max_seq_length == 256
    words = [f"emission{i % 97} limit value {i} measured at the band edge" for i in range(600)]
    long_paragraph = "§ 15.209 Radiated emission limits; general requirements.\n\n" + " ".join(
        words
    )
    unbroken = "-".join(["ab"] * 2000)  # no whitespace anywhere: 4000 tokens
    loaded = LoadedFile("text", "t", [Segment(long_paragraph), Segment(unbroken, page=2)])
    chunks = chunker.chunk(loaded)
    assert len(chunks) > 10
    lengths = [len(model.tokenizer(c.embed_text)["input_ids"]) for c in chunks]
    assert max(lengths) <= 256
    assert [c.tokens for c in chunks] == lengths
    text_lengths = [
        len(model.tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in chunks
    ]
    assert max(text_lengths) <= chunker.budget == 200
    body = [c for c in chunks if c.page is None]
    assert all(c.section == "15.209" for c in body)
    # Windows overlap: each piece starts with words that ended the previous one.
    for before, after in zip(body[1:], body[2:], strict=False):
        assert after.text.split()[0] in before.text.split()[-40:]
    # Context-free windows are embedded with their section heading in front.
    assert body[3].embed_text.startswith("§ 15.209 Radiated emission limits")


def test_lettered_paragraphs_start_chunks():
    from ingest.documents import LoadedFile, Segment

    chunker, _ = _chunker()
    sentence = "The station shall comply with the power limit of this paragraph."  # ~13 tokens
    groups = []
    for letter in "abcdef":
        lines = [f"({letter}) {sentence} {sentence}"]
        lines += [f"({number}) {sentence} {sentence}" for number in (1, 2, 3)]
        groups.append("\n\n".join(lines))  # about 120 tokens per lettered paragraph
    text = "§ 97.313 Transmitter power standards.\n\n" + "\n\n".join(groups)
    chunks = chunker.chunk(LoadedFile("text", "t", [Segment(text)]))
    assert len(chunks) == 6
    # Greedy packing would start chunks at "(2)"; a lettered paragraph starts a chunk instead.
    assert [c.text.split()[0] for c in chunks[1:]] == ["(b)", "(c)", "(d)", "(e)", "(f)"]
    assert {c.section for c in chunks} == {"97.313"}


def test_each_definition_is_its_own_chunk():
    """The default corpus's § 80.5 lists its terms without markers, some with numbered
    sub-paragraphs ("Urgency signal. (1) ... (4) ..."). Each term is a chunk of its own, at
    the top of the section's paragraphs, and its sub-paragraphs stay with it."""
    from chains.evidence import split_passages
    from ingest.loaders import load_file

    chunker, _ = _chunker()
    path = ROOT / "data/corpus/ecfr/part80/80.5.xml"
    chunks = chunker.chunk(load_file(path, path.read_bytes()))
    underway = [c for c in chunks if "underway" in c.text.lower()]
    assert len(underway) == 1
    assert underway[0].text.startswith("Underway. A vessel is underway when")
    assert underway[0].para_path == []
    urgency = next(c for c in chunks if c.text.startswith("Urgency signal."))
    assert "“PAN PAN”" in urgency.text
    after = next(c for c in chunks if "Vessel traffic service (VTS)." in c.text)
    assert after.text.startswith("Vessel traffic service") and after.para_path == []
    # The passages keep the pinpoints: a term after "Urgency signal. (1)-(4)" is no (4).
    stored = SimpleNamespace(
        text=after.text, metadata={"section": "80.5", "heading": after.heading, "para_path": []}
    )
    assert [p.paragraph for p in split_passages(stored)] == [None]
    # A rule outside a definitions section still packs several paragraphs into a chunk.
    path = ROOT / "data/corpus/ecfr/part97/97.313.xml"
    chunks = chunker.chunk(load_file(path, path.read_bytes()))
    assert chunks[0].text.count("\n\n(") >= 3


def test_a_table_caption_in_a_rule_is_no_heading(tmp_path):
    """§ 97.303(h) holds a table captioned "60 M Band Frequencies (kHz)", a line shaped like a
    KDB's numbered heading ("2. Requirements ..."). In the eCFR text files it was taken for
    one and became the heading of the section's later chunks: (i) to (r), on other bands,
    were embedded and ranked as being about the 60 m band. In a rule every chunk keeps the
    section's heading; the caption stays in the text. (The section as text, from the
    default corpus's XML: the form of `../shared/fcc-corpus/part97/txt`.)"""
    from ingest.loaders import load_file

    chunker, _ = _chunker()
    xml = ROOT / "data/corpus/ecfr/part97/97.303.xml"
    text = tmp_path / "97.303.txt"
    text.write_text(load_file(xml, xml.read_bytes()).segments[0].text, encoding="utf-8")
    chunks = chunker.chunk(load_file(text, text.read_bytes()))
    assert chunks[0].heading == "§ 97.303 Frequency sharing requirements."
    assert {c.heading for c in chunks} == {chunks[0].heading}
    assert any("60 M Band Frequencies (kHz)" in c.text for c in chunks)
    five_cm = next(c for c in chunks if "In the 5 cm band" in c.text)
    assert "60 M" not in five_cm.embed_text


# Store lock and the CLI ----------------------------------------------------------------------


def _env(qdrant_path: Path) -> dict:
    env = dict(os.environ, QDRANT_PATH=str(qdrant_path), HF_HUB_OFFLINE="1")
    env.pop("QDRANT_URL", None)
    env.pop("QDRANT_HOST", None)
    return env


def test_store_locked_by_another_process(tmp_path):
    store = tmp_path / "qdrant"
    store.mkdir()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text(MARKDOWN)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from qdrant_client import QdrantClient; "
            f"c = QdrantClient(path={str(store)!r}); print('ready', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = subprocess.run(
            [sys.executable, "-m", "ingest", str(docs)],
            cwd=ROOT,
            env=_env(store),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    assert "in use by another process" in result.stderr
    assert "stop the app" in result.stderr and "QDRANT_URL" in result.stderr


def test_cli_json_report(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text(MARKDOWN)
    (docs / "b.txt").write_text(TEXT)
    _write_bad_files(docs)
    command = [sys.executable, "-m", "ingest", str(docs), "--json", "--collection", "cli_test"]
    started = time.time()
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=_env(tmp_path / "qdrant"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    report = json.loads(last)
    assert set(report) == {
        "files_seen",
        "files_added",
        "files_unchanged",
        "files_replaced",
        "files_removed",
        "files_skipped",
        "chunks_written",
        "seconds",
        "skipped",
    }
    assert (report["files_added"], report["files_skipped"]) == (2, 6)
    assert all(set(entry) == {"file", "reason"} for entry in report["skipped"])
    assert 0 < report["seconds"] < time.time() - started
    assert "Ingesting" not in result.stderr  # no progress bar with --json

    # Only unreadable files: nothing could be ingested -> non-zero exit.
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    _write_bad_files(only_bad)
    result = subprocess.run(
        [sys.executable, "-m", "ingest", str(only_bad), "--json"],
        cwd=ROOT,
        env=_env(tmp_path / "qdrant"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert json.loads(result.stdout.strip().splitlines()[-1])["files_skipped"] == 6
    assert "nothing could be ingested" in result.stderr


def test_sample_corpus_ingests_without_skips(corpus_collection):
    from ingest.pipeline import list_sources
    from tests.conftest import SAMPLE_CORPUS as corpus

    files = [p for p in corpus.rglob("*") if p.is_file() and not p.name.startswith(".")]
    sources = list_sources(corpus_collection)
    assert len(sources) == len(files)
    assert {s["doc_type"] for s in sources} >= {
        "pdf",
        "html",
        "markdown",
        "text",
        "docx",
        "ecfr_xml",
    }
