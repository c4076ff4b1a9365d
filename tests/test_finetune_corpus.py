"""`data from-corpus`: RAG training records in the served prompt format (real store, retriever,
evidence passages and the chain itself for comparison)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from finetune.corpus import answer_overlap, build_corpus_examples, cite
from finetune.data import read_examples

ROOT = Path(__file__).resolve().parent.parent

QA = """question,answer,category,difficulty
What is an intentional radiator?,"Under § 15.3(o), an intentional radiator is a device that intentionally generates and emits radio frequency energy by radiation or induction.",definitions,easy
What are examples of incidental radiators?,"Under § 15.3(n), incidental radiators generate RF energy during operation without being designed to do so; examples are dc motors and mechanical light switches.",definitions,easy
What is a mobile device for RF exposure purposes?,"Under § 2.1091(b), a mobile device is used in other than fixed locations with at least 20 centimeters normally maintained between its radiating structure and the body of the user or nearby persons.",rf_exposure,medium
What is a carrier current system?,"A carrier current system transmits radio frequency energy by conduction over the electric power lines.",definitions,medium
What signal rate makes an unintentional radiator a digital device?,"Under § 15.3(k), a digital device generates and uses timing signals or pulses at a rate above 9,000 pulses per second and uses digital techniques.",definitions,medium
What does the zorblax rule say about quantum toasters?,"Zorblax toasters must hum at 42 kHz while toasting quantum bread.",definitions,hard
"""


def test_cite_puts_the_number_after_each_sentence():
    assert cite("A holds. B holds too.", 2) == "A holds [2]. B holds too [2]."
    assert cite("Under § 15.3(o), a device emits RF", 1) == "Under § 15.3(o), a device emits RF [1]"
    assert cite("Limits are in § 15.109. They apply to Class B.", 3) == (
        "Limits are in § 15.109 [3]. They apply to Class B [3]."
    )


def test_from_corpus_builds_cited_and_abstaining_examples(corpus_collection, tmp_path):
    from chains.prompts import NO_ANSWER, RAG_SYSTEM
    from core.settings import get_settings

    qa = tmp_path / "qa.csv"
    qa.write_text(QA)
    out = tmp_path / "rag.jsonl"
    report = build_corpus_examples(
        qa, out, collection=corpus_collection, k=3, abstain_ratio=0.4, seed=3
    )
    assert report.questions == 6
    # No passage holds the zorblax answer. Passages are paragraphs or sentences, so a written
    # answer joining two sentences of a long paragraph may find no passage either.
    assert any("zorblax" in s for s in report.skipped) and len(report.skipped) <= 2
    assert report.answered >= 1 and report.abstaining >= 1
    kept = 6 - len(report.skipped)
    assert report.answered + report.abstaining == kept

    loaded = read_examples(out)  # our own loader reads the output
    assert not loaded.issues and len(loaded.examples) == kept
    assert all(e.prompt_format == "rag-evidence" for e in loaded.examples)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    references = {
        row["messages"][-2]["content"].split("Question: ")[1].split("\n")[0]: row for row in rows
    }
    qa_answers = {e.question: e.answer for e in read_examples(qa).examples}
    most = get_settings().evidence_passages
    for question, row in references.items():
        messages = row["messages"]
        assert messages[0] == {"role": "system", "content": RAG_SYSTEM}
        assert row["prompt_format"] == "rag-evidence"
        prompt = messages[-2]["content"]
        numbered = re.findall(r"^\[(\d+)\] \(", prompt, flags=re.MULTILINE)
        assert numbered == [str(n) for n in range(1, len(numbered) + 1)]
        assert 1 <= len(numbered) <= most  # evidence passages, as many as the chain shows
        entries = re.findall(r"^\[(\d+)\] \((?:[^()]|\([^()]*\))*\) (.*)$", prompt, flags=re.M)
        blocks = dict(entries)
        reference = qa_answers[question]
        target = messages[-1]["content"]
        if row["meta"]["cited"] is None:
            assert target == NO_ANSWER
            assert all(answer_overlap(reference, text) < 0.35 for text in blocks.values())
        else:
            n = row["meta"]["cited"]
            assert target == cite(reference, n) and f"[{n}]" in target
            assert answer_overlap(reference, blocks[str(n)]) >= 0.5  # the cited passage answers
            assert row["meta"]["passages"][n - 1] == row["meta"]["gold"]

    again = tmp_path / "again.jsonl"
    build_corpus_examples(qa, again, collection=corpus_collection, k=3, abstain_ratio=0.4, seed=3)
    assert again.read_text() == out.read_text()  # deterministic for a seed


def test_records_are_exactly_the_prompt_the_chain_serves(corpus_collection, tmp_path):
    """One builder for training and serving: where retrieval found the answer's passage by
    itself, the record's prompt is, message for message, what RagChain gives the model."""
    from chains.prompts import build_rag_messages
    from chains.rag import RagChain
    from chains.retrieval import Retriever

    qa = tmp_path / "qa.csv"
    qa.write_text(QA)
    out = tmp_path / "rag.jsonl"
    build_corpus_examples(
        qa, out, collection=corpus_collection, abstain_ratio=0.0, gold_position="ranked"
    )
    chain = RagChain(None, Retriever(corpus_collection))
    compared = 0
    for line in out.read_text().splitlines():
        row = json.loads(line)
        if row["meta"]["gold_chunk_added"] or row["meta"]["gold_inserted"]:
            continue
        question = row["messages"][-2]["content"].split("Question: ")[1].split("\n")[0]
        served = chain.retrieve_only(question)
        assert row["messages"][:-1] == build_rag_messages(question, served.sources), question
        compared += 1
    assert compared >= 3


def test_generated_pairs_cite_their_own_passage_at_varying_positions(corpus_collection, tmp_path):
    from finetune.qa_gen import build_docs_qa

    qa = tmp_path / "docs.csv"
    build_docs_qa(
        [
            ROOT / "data" / "samples" / "part2_equipment_authorization.xml",
            ROOT / "data" / "samples" / "part15_definitions.txt",
        ],
        qa,
        progress=False,
    )
    out = tmp_path / "rag.jsonl"
    report = build_corpus_examples(qa, out, collection=corpus_collection, abstain_ratio=0.1)
    assert report.answered >= 10 and report.verbatim == report.answered  # found word for word
    assert len(report.gold_positions) >= 2  # not always [1]
    for line in out.read_text().splitlines():
        row = json.loads(line)
        n = row["meta"]["cited"]
        if n is None:
            continue
        answer = row["messages"][-1]["content"].replace(f" [{n}]", "")
        entry = next(
            block
            for block in row["messages"][-2]["content"].removeprefix("Sources:\n").split("\n\n")
            if block.startswith(f"[{n}] (")
        )
        assert answer.rstrip(".") in entry  # the target quotes the cited passage


def test_from_corpus_refuses_an_empty_collection(tmp_path, corpus_collection):
    qa = tmp_path / "qa.csv"
    qa.write_text(QA)
    with pytest.raises(ValueError, match="empty or missing"):
        build_corpus_examples(qa, tmp_path / "x.jsonl", collection="no_such_collection")
