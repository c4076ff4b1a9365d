"""`data from-docs`: rule-based Q&A from the sample corpus (real loaders, chunker and passages)."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from finetune.qa_gen import (
    CSV_COLUMNS,
    _Doc,
    difficulty_of,
    document_passages,
    generate_pairs,
    questions_for,
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "samples"


def _normal(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def report():
    return generate_pairs([CORPUS], progress=False)


def test_pairs_from_every_file_type(report):
    from ingest.loaders import load_file

    types = {
        load_file(p, p.read_bytes()).doc_type
        for p in CORPUS.iterdir()
        if p.name in {pair.source for pair in report.pairs}
    }
    assert {"pdf", "docx", "html", "markdown", "text", "ecfr_xml"} <= types
    by_source = Counter(pair.source for pair in report.pairs)
    assert set(by_source) == {p.name for p in CORPUS.iterdir()}  # every sample file gives pairs
    assert len(report.pairs) >= 100
    assert {"limit", "definition", "obligation", "table"} <= set(report.by_kind)


def test_every_answer_is_verbatim_in_its_document_and_questions_are_unique(report):
    texts = {}
    for path in CORPUS.iterdir():
        doc, _ = document_passages(path)
        texts[path.name] = (doc.text, _normal(doc.text))
    for pair in report.pairs:
        raw, normal = texts[pair.source]
        assert pair.raw in raw, pair  # a verbatim slice of the loaded document
        assert pair.answer == _normal(pair.raw) and pair.answer in normal  # line wraps as spaces
    keys = [" ".join(p.question.casefold().split()) for p in report.pairs]
    assert len(keys) == len(set(keys))
    assert all(p.question.endswith("?") and p.question[0].isupper() for p in report.pairs)


def test_labels(report):
    categories = {p.category for p in report.pairs}
    assert "part2_subpart_j" in categories  # eCFR XML: part and subpart
    assert "part15" in categories  # sections named in the text
    assert "kdb_447498_rf_exposure" in categories  # no CFR structure: the document
    assert {p.difficulty for p in report.pairs} == {"easy", "medium", "hard"}
    assert difficulty_of("definition", "Carrier current system. A system that conducts RF.") == (
        "easy"
    )
    assert difficulty_of("limit", "Except as provided in (b), the power must not exceed 1 W.") == (
        "hard"
    )
    sections = [p for p in report.pairs if p.section]
    assert sections and all(p.pinpoint.startswith(f"§ {p.section}") for p in sections)


def test_rules_on_known_statements():
    from types import SimpleNamespace

    def passage(text, section="97.313", heading="§ 97.313 Transmitter power standards.", **kw):
        values = dict(
            text=text,
            section=section,
            pinpoint=f"§ {section}(b)",
            heading=heading,
            page=None,
            context=None,
            source="x.txt",
            part=None,
            subpart=None,
        )
        values.update(kw)
        return SimpleNamespace(**values)

    doc = _Doc("x.txt", "X", "text", "")
    limit = questions_for(passage("The peak output power must not exceed 1 W."), doc)
    assert limit == [
        (
            "limit",
            "What is the maximum peak output power under § 97.313?",
            "The peak output power must not exceed 1 W.",
            "The peak output power must not exceed 1 W.",
        )
    ]
    definition = questions_for(
        passage("Harmful interference means interference that degrades."), doc
    )
    assert definition[0][:2] == (
        "definition",
        "What does harmful interference mean under § 97.313?",
    )
    who = questions_for(passage("The grantee must keep the test records for the device."), doc)
    assert who[0][:2] == ("who", "Who must keep the test records for the device under § 97.313?")
    prohibition = questions_for(passage("The user manual must not tell users how to open it."), doc)
    assert prohibition[0][:2] == ("prohibition", "What does § 97.313 prohibit for the user manual?")
    row = passage(
        "| TV broadcast receiver | SDoC or Certification |",
        context="| Type of device | Equipment authorization required |",
    )
    assert questions_for(row, doc)[0][:3] == (
        "table",
        "What is the equipment authorization required for TV broadcast receiver under § 97.313?",
        "TV broadcast receiver | SDoC or Certification",
    )


def test_cli_writes_the_csv_that_data_stats_reads(tmp_path):
    out = tmp_path / "qa.csv"
    files = [CORPUS / "part15_definitions.txt", CORPUS / "kdb_447498_rf_exposure.pdf"]
    env_python = sys.executable
    done = subprocess.run(
        [env_python, "-m", "finetune", "data", "from-docs", *map(str, files), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "question/answer pairs from 2 file(s)" in done.stdout
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0]) == list(CSV_COLUMNS)
    assert {r["source"] for r in rows} == {f.name for f in files}

    from finetune.data import dataset_stats, read_examples

    loaded = read_examples(out)
    assert len(loaded.examples) == len(rows) and not loaded.errors
    stats = dataset_stats(loaded.examples)
    assert sum(stats["by_difficulty"].values()) == len(rows)


def test_from_docs_needs_input(tmp_path):
    from finetune.cli import main

    assert main(["data", "from-docs", "--out", str(tmp_path / "x.csv")]) == 2
