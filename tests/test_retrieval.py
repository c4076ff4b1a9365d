"""Retrieval on real embeddings in the embedded Qdrant store: dense, BM25, hybrid, MMR, filters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

RULES = """# Sample rules

## § 15.207 Conducted limits.

(a) The radio frequency voltage that is conducted back onto the AC power line on any frequency within the band 150 kHz to 30 MHz shall not exceed 66 dBuV quasi-peak.

## § 15.15 General technical requirements.

(a) An intentional or unintentional radiator shall be constructed in accordance with good engineering design and manufacturing practice. This section states what every device is required to do and which requirements apply to it.

(b) Devices must not be modified by the user in a way that defeats these requirements.

## § 15.209 Radiated emission limits; general requirements.

(a) The emissions from an intentional radiator shall not exceed the field strength levels given in the table, measured at 3 meters.
"""

EXPOSURE = """# RF exposure

## § 2.1093 Radiofrequency radiation exposure evaluation: portable devices.

(d) The SAR limit for portable devices used by the general public is 1.6 W/kg averaged over any 1 gram of tissue.

## § 1.1310 Radiofrequency radiation exposure limits.

(a) Limits for maximum permissible exposure are given in terms of power density in mW/cm2 for mobile and fixed transmitters.
"""

OFF_TOPIC = """# Kitchen notes

Bake the banana bread at 180 degrees for fifty minutes, then let it cool before slicing.
"""


@pytest.fixture(scope="module")
def small_collection(tmp_path_factory) -> str:
    from ingest.pipeline import ingest_paths

    folder = tmp_path_factory.mktemp("retrieval") / "docs"
    folder.mkdir()
    (folder / "rules.md").write_text(RULES)
    (folder / "exposure.md").write_text(EXPOSURE)
    (folder / "kitchen.md").write_text(OFF_TOPIC)
    report = ingest_paths([folder], collection="test_retrieval", progress=False)
    assert report.files_added == 3
    return "test_retrieval"


@pytest.fixture(scope="module")
def retriever(small_collection):
    from chains.retrieval import Retriever

    return Retriever(small_collection)


def test_hybrid_finds_the_named_section_where_dense_does_not(retriever):
    query = "What does 15.207 require?"
    dense = retriever.search(query, k=3, mode="dense")
    # The question's wording ("require") pulls dense search to the "requirements" section.
    assert dense[0].section != "15.207"
    hybrid = retriever.search(query, k=3, mode="hybrid")
    assert hybrid[0].section == "15.207"
    assert "section" in hybrid[0].matched_by
    bm25 = retriever.search(query, k=3, mode="bm25")
    assert bm25[0].section == "15.207"


def test_bm25_matches_exact_numbers(retriever):
    hits = retriever.search("1.6 W/kg", k=2, mode="bm25")
    assert hits[0].section == "2.1093"
    assert hits[0].matched_by == ["sparse"]


def test_every_hit_carries_its_dense_cosine(retriever):
    query = "What does 15.207 require?"
    reference = {hit.id: hit.score for hit in retriever.search(query, k=50, mode="dense")}
    assert len(reference) == retriever.count()
    for mode in ("hybrid", "bm25"):
        hits = retriever.search(query, k=5, mode=mode)
        assert hits
        for hit in hits:
            assert hit.dense_score == pytest.approx(reference[hit.id], abs=1e-4), mode
    hybrid = retriever.search(query, k=5, mode="hybrid")
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)
    # The dense cosine is the real cosine between the query and the stored embedding.
    from core.store import get_sentence_model

    vector = get_sentence_model().encode([query], normalize_embeddings=True)[0]
    stored = retriever.client.retrieve(retriever.collection, [hybrid[0].id], with_vectors=["dense"])
    assert float(np.dot(vector, stored[0].vector["dense"])) == pytest.approx(
        hybrid[0].dense_score, abs=1e-4
    )


def test_score_threshold_applies_to_the_dense_cosine(retriever):
    off_topic = "quantum chromodynamics of gluon plasma"
    assert retriever.search(off_topic, k=4, mode="hybrid", score_threshold=0.6) == []
    assert retriever.search(off_topic, k=4, mode="dense", score_threshold=0.6) == []
    hits = retriever.search(
        "SAR limit for portable devices", k=4, mode="hybrid", score_threshold=0.4
    )
    assert hits and all(h.dense_score >= 0.4 for h in hits)
    assert (
        retriever.search("SAR limit for portable devices", k=4, mode="hybrid")[-1].dense_score < 0.4
    )
    # A section the query names is kept even though a bare question embeds far from it.
    named = retriever.search("What does 15.207 require?", k=2, mode="hybrid", score_threshold=0.6)
    assert [h.section for h in named] == ["15.207"]


def test_metadata_filters(retriever):
    hits = retriever.search("limits", k=10, mode="hybrid", filters={"source": "exposure.md"})
    assert hits and {h.source for h in hits} == {"exposure.md"}
    hits = retriever.search("limits", k=10, mode="dense", filters={"section": ["15.209", "1.1310"]})
    assert {h.section for h in hits} == {"15.209", "1.1310"}
    hits = retriever.search("exposure limit", k=10, mode="bm25", filters={"part": "2"})
    assert hits and {h.section for h in hits} == {"2.1093"}
    with pytest.raises(ValueError, match="Unknown filter"):
        retriever.search("limits", filters={"colour": "red"})


def test_mmr_diversifies(retriever):
    query = "requirements for devices"
    dense = retriever.search(query, k=3, mode="dense")
    assert [h.id for h in retriever.mmr(query, k=3, fetch_k=10, lambda_mult=1.0)] == [
        h.id for h in dense
    ]
    diverse = retriever.mmr(query, k=3, fetch_k=10, lambda_mult=0.0)
    assert diverse[0].id == dense[0].id
    assert len({h.id for h in diverse}) == 3
    assert [h.id for h in diverse] != [h.id for h in dense]


def test_langchain_retriever(retriever):
    from langchain_core.retrievers import BaseRetriever

    lc = retriever.as_langchain_retriever(k=2, mode="hybrid")
    assert isinstance(lc, BaseRetriever)
    documents = lc.invoke("What does 15.207 require?")
    assert len(documents) == 2
    first = documents[0]
    assert first.metadata["section"] == "15.207" and first.metadata["source"] == "rules.md"
    assert {"score", "dense_score", "page", "chunk_index", "id"} <= set(first.metadata)
    assert "66 dBuV" in first.page_content
    mmr = retriever.as_langchain_retriever(search_type="mmr", k=2, fetch_k=6)
    assert len(mmr.invoke("limits")) == 2


def test_missing_collection_is_empty():
    from chains.retrieval import Retriever

    missing = Retriever("no_such_collection")
    assert missing.count() == 0
    assert missing.search("anything") == []
    with pytest.raises(ValueError, match="mode"):
        Retriever("no_such_collection").search("x", mode="fuzzy")


def test_sample_corpus_hybrid_section_query(corpus_collection):
    from chains.retrieval import Retriever

    retriever = Retriever(corpus_collection)
    hits = retriever.search("What does 15.109 require?", k=4, mode="hybrid")
    assert hits[0].section == "15.109"
    hits = retriever.search("What is the SAR limit for portable devices?", k=4, mode="hybrid")
    assert hits[0].section in {"2.1093", "1.1310"}
    assert "1.6 W/kg" in " ".join(h.text for h in hits)


def test_retrieve_cli_json(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "rules.md").write_text(RULES)
    env = dict(os.environ, QDRANT_PATH=str(tmp_path / "qdrant"), HF_HUB_OFFLINE="1")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    ingested = run("ingest", str(docs), "--json", "--collection", "cli_retrieve")
    assert ingested.returncode == 0, ingested.stderr
    result = run(
        "cli.retrieve",
        "What does 15.207 require?",
        "--k",
        "2",
        "--mode",
        "hybrid",
        "--collection",
        "cli_retrieve",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(hits) == 2 and hits[0]["section"] == "15.207"
    assert {"source", "page", "section", "score", "dense_score", "text"} <= set(hits[0])
    empty = run("cli.retrieve", "x", "--collection", "nothing_here")
    assert empty.returncode == 1 and "ingest first" in empty.stderr


def test_quantities_are_not_section_ids():
    """ "1.5 kW" or "2.4 GHz" read as section ids bypassed the relevance threshold."""
    from chains.retrieval import section_ids

    assert section_ids("Is a 1.5 kW PEP limit in the 2.4 GHz band allowed?") == []
    assert section_ids("What is 0.5 percent of it?") == []
    assert section_ids("What does 15.109 require below 1.705 MHz?") == ["15.109"]
    assert section_ids("§ 97.313 and section 80.215 at 25 W") == ["97.313", "80.215"]
    # A range's first number: "28.0-28.5 MHz" abstained as "the documents do not include § 28.0".
    assert section_ids("What power on the 28.0-28.5 MHz segment?") == []
    assert section_ids("Who may use 10.10 to 10.15 MHz under § 97.313?") == ["97.313"]
    # Exam wording: "between 28.300 and 28.500 MHz" abstained as "... do not include § 28.300".
    assert section_ids("What may a Technician use between 28.300 and 28.500 MHz?") == []


def _ingest_ecfr(tmp_path, sections: tuple[str, ...], collection: str) -> None:
    """These sections of the default corpus (eCFR XML), ingested into `collection`."""
    import shutil

    from ingest.pipeline import ingest_paths

    folder = tmp_path / "ecfr"
    folder.mkdir()
    for section in sections:
        part = section.split(".")[0]
        shutil.copy(ROOT / "data" / "corpus" / "ecfr" / f"part{part}" / f"{section}.xml", folder)
    ingest_paths([folder], collection=collection, progress=False)


def test_the_asked_case_is_found_in_another_chunk_of_the_section(tmp_path):
    """Asked for the power on "the 60-meter ham band", the two best chunks of the default
    corpus's § 97.313 and its neighbours hold (a)-(h), not (i) "100 W PEP on the 60 m band":
    the section's other chunks are ranked too, and (i) is the answer."""

    from chains.rag import RagChain
    from chains.retrieval import Retriever
    from core.settings import Settings

    _ingest_ecfr(tmp_path, ("97.303", "97.305", "97.307", "97.313"), "test_section_chunks")
    retriever = Retriever("test_section_chunks")
    question = "How much power can I put out on the 60-meter ham band?"
    hits = retriever.search(question, k=2)
    assert not any("100 W PEP on the 60 m band" in hit.text for hit in hits)
    more = retriever.with_section_chunks(question, hits, 1)
    assert more[:2] == hits and {hit.section for hit in more[2:]} == {hits[0].section}
    assert any("100 W PEP on the 60 m band" in hit.text for hit in more[2:])
    assert len({hit.id for hit in more}) == len(more)

    def answer(sections: int):
        chain = RagChain(None, retriever, settings=Settings(section_chunks=sections))
        return chain.invoke(question, k=2, answer_mode="extractive")

    without, with_sections = answer(0), answer(2)
    assert "§ 97.313(i)" not in [source.pinpoint for source in without.sources]
    assert with_sections.sources[0].pinpoint == "§ 97.313(i)"
    assert with_sections.short_answer.startswith("At most 100 W PEP (§ 97.313(i))")


def test_each_part_of_a_two_part_question_is_answered(tmp_path):
    """ "How many VEs ..., and how old must each be?" asks two things. Ranked against the
    whole question, § 97.509(a)'s "at least 3 VEs" won and (b)'s "at least 18 years of age"
    was not quoted; the second part's best passage in the same section is quoted too."""

    from chains.evidence import question_parts
    from chains.rag import RagChain
    from chains.retrieval import Retriever

    question = (
        "How many volunteer examiners must administer an amateur license exam, "
        "and how old must each be?"
    )
    assert question_parts(question) == [
        "How many volunteer examiners must administer an amateur license exam",
        "how old must each be?",
    ]
    assert len(question_parts("What is the order of priority of communications?")) == 1
    _ingest_ecfr(
        tmp_path, ("97.503", "97.505", "97.507", "97.509", "97.511"), "test_question_parts"
    )
    chain = RagChain(None, Retriever("test_question_parts"))
    result = chain.invoke(question, answer_mode="extractive")
    first, *quotes = result.answer.splitlines()
    assert first == "At least 3 VEs (§ 97.509(a)) [1]"
    assert any("at least 18 years of age" in line for line in quotes)
    one_part = chain.invoke(question.split(",")[0] + "?", answer_mode="extractive")
    assert "18 years" not in one_part.answer


def test_a_band_named_by_wavelength_finds_the_rule_that_gives_its_frequencies(tmp_path):
    """§ 97.313(c)(1) limits "the 10.10-10.15 MHz segment" to 200 W PEP and never says "30 m";
    the band plan (§ 97.301's tables, read from the collection) says the 30 m band is
    10.1-10.15 MHz, so "the 30 meter band" is answered from (c)(1), not from the whole
    section's list (a)-(d)."""

    from chains.rag import RagChain
    from chains.retrieval import Retriever

    _ingest_ecfr(tmp_path, ("97.301", "97.303", "97.305", "97.313"), "test_band_plan")
    retriever = Retriever("test_band_plan")
    plan = retriever.band_ranges()
    assert plan["30m"] == (10.1e6, 10.15e6) and plan["2200m"] == (135.7e3, 137.8e3)
    assert plan["70cm"] == (420e6, 450e6)
    chain = RagChain(None, retriever)
    answer = chain.invoke(
        "What is the maximum transmitter power an amateur station may use on the 30 meter band?",
        answer_mode="extractive",
    ).answer
    assert answer.startswith("At most 200 W PEP (§ 97.313(c)(1)) [1]")
    answer = chain.invoke(
        "What is the maximum power a Novice may use on the 10 meter band?", answer_mode="extractive"
    ).answer
    assert answer.startswith("At most 200 W PEP (§ 97.313(c)(2)) [1]")


def test_a_lead_in_that_ends_its_chunk_is_read_with_the_next_chunk(tmp_path, shared_corpus):
    """In the eCFR text, § 97.301(d) "... of General Class:" ends its chunk; its table, with
    the 20 m segments asked for, begins the next one. The next chunk joins the candidates,
    and the table's row is quoted with the lead-in. (The default corpus's XML is chunked with
    the lead-in beside its first rows.)"""
    import shutil

    from chains.rag import RagChain
    from chains.retrieval import Retriever
    from ingest.pipeline import ingest_paths

    folder = tmp_path / "part97"
    folder.mkdir()
    for section in ("97.301", "97.201", "97.305"):
        shutil.copy(shared_corpus / "part97" / "txt" / f"{section}.txt", folder)
    ingest_paths([folder], collection="test_continuations", progress=False)
    retriever = Retriever("test_continuations")
    question = (
        "Which portions of the 20 meter band are available to a station whose control "
        "operator holds a General Class license?"
    )
    hits = retriever.search(question, k=4, section_chunks=2)
    following = [hit for hit in hits if hit.matched_by == ["continuation"]]
    assert following and len({hit.id for hit in hits}) == len(hits)
    for hit in following:
        [before] = [
            h for h in hits if (h.source, h.chunk_index) == (hit.source, hit.chunk_index - 1)
        ]
        assert before.text.rstrip().endswith(":")
    answer = RagChain(None, retriever).invoke(question, answer_mode="extractive")
    quotes = [source.text for source in answer.sources if source.pinpoint == "§ 97.301(d)"]
    assert any("20 m | 14.025-14.150" in quote for quote in quotes)


def test_words_few_passages_hold_decide_between_passages(tmp_path):
    """Asked when a third party may take part in stating a message, § 97.115(a)(2) (messages
    for third parties to foreign stations) shares "third party", "message", "amateur" and
    "station" with the question, and was the whole answer. Those words are in most of the
    candidates; "participate" and "stating" are only in (b), whose items now answer."""
    from chains.rag import RagChain
    from chains.retrieval import Retriever

    sections = ("97.115", "97.3", "97.119", "97.219", "97.111")
    _ingest_ecfr(tmp_path, sections, "test_pool_idf")
    question = (
        "Under what condition may a third party participate in stating a message over an "
        "amateur station?"
    )
    answer = RagChain(None, Retriever("test_pool_idf")).invoke(question, answer_mode="extractive")
    assert "§ 97.115(b)(1)" in [source.pinpoint for source in answer.sources]
    assert "continuously monitoring" in answer.answer


def test_a_question_in_the_askers_words_is_searched_with_the_rules_words(tmp_path, monkeypatch):
    """ "ham" and "rig" are in no document: the keyword search matched Part 80's ship power
    rules on "power". The words the dense ranking's best chunks share join the keyword query
    (at a fraction of the asker's weight), and the amateur rules come first."""
    import chains.retrieval
    from chains.retrieval import Retriever

    sections = ("97.11", "97.5", "97.13", "97.121", "97.313", "97.17", "97.509")
    sections += ("80.1099", "80.177", "80.13", "80.1005", "80.93", "80.215")
    _ingest_ecfr(tmp_path, sections, "test_feedback")
    retriever = Retriever("test_feedback")
    asked = {
        "What's the most power I can run on my ham rig?": "97.313",
        "Do I have to check whether my ham antenna puts too much radiation on my neighbors?": (
            "97.13"
        ),
    }
    for question, section in asked.items():
        assert retriever.search(question, k=4)[0].section == section
    monkeypatch.setattr(chains.retrieval, "FEEDBACK_WEIGHT", 0.0)  # the keyword query as asked
    for question, section in asked.items():
        assert retriever.search(question, k=4)[0].section != section


def test_a_table_row_brings_the_paragraph_it_cites(tmp_path):
    """§ 97.305(c)'s rows give each band's emission types and the § 97.307 paragraph whose
    standards they follow ("20 m | 14.00-14.15 MHz | RTTY, data | (f)(3)."); § 97.307(f)(3)
    states the bandwidth and never names the band. Asked for the 20 m band's data bandwidth,
    the row and the paragraph it cites are quoted."""
    from chains.evidence import cited_paragraphs
    from chains.rag import RagChain
    from chains.retrieval import Retriever

    assert cited_paragraphs("80 m | Entire band | RTTY, data | (f)(3), (9).") == [
        "(f)(3)",
        "(f)(9)",
    ]
    assert cited_paragraphs("20 m | 14.15-14.35 MHz | Phone, image | (f)(1), (2).") == [
        "(f)(1)",
        "(f)(2)",
    ]
    assert cited_paragraphs("160 m | 1.8-2.0 MHz | 1.5 kW PEP") == []
    _ingest_ecfr(tmp_path, ("97.303", "97.305", "97.307", "97.313"), "test_cited")
    retriever = Retriever("test_cited")
    assert retriever.cited_sections()["97.305"] == "97.307"
    question = "What is the maximum symbol rate for a RTTY or data emission on the 20 meter band?"
    answer = RagChain(None, retriever).invoke(question, answer_mode="extractive")
    pinpoints = [source.pinpoint for source in answer.sources if source.cited]
    assert any(p.startswith("§ 97.305(c)") for p in pinpoints), pinpoints
    assert "§ 97.307(f)(3)" in pinpoints
    assert "The authorized bandwidth is 2.8 kHz" in answer.answer
    # The 60 m band is in no band-plan table: § 97.303(h) names it beside its range. Its row
    # cites (f)(14), whose table restricts phone to upper sideband: quoted with the row.
    assert retriever.band_ranges()["60m"] == (5330.5e3, 5406.4e3)
    question = "On the 60 m band, phone transmissions are restricted to which mode?"
    answer = RagChain(None, retriever).invoke(question, answer_mode="extractive").answer
    assert "Upper sideband transmissions (USB)" in answer, answer
    assert not answer.startswith("5330.5")  # a mode is asked, not an amount
