"""Query expansion (chains/glossary.py, QUERY_EXPANSION): the glossary, the collection's own
definitions sections, and `Retriever.search` on the real stack (MiniLM, embedded Qdrant)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from chains.glossary import (
    CorpusDefinitions,
    Definition,
    Expansion,
    Glossary,
    GlossaryEntry,
    QueryExpander,
    collection_definitions,
    load_glossary,
    parse_definitions,
)

# Written for these tests (paraphrases in the rules' style, not rule text).
MARITIME = """# Maritime sample

## § 80.5 Definitions.

Associated ship unit. A portable VHF transmitter carried near the ship station it belongs to.

Digital selective calling (DSC). An automated calling system that alerts stations by digital codes.

Ship or vessel. Any watercraft used as a means of transportation on water.

## § 80.115 Associated ship units.

(a) A hand-held portable transmitter used as an associated ship unit is limited to one watt of transmitter power.

## § 80.215 Ship station power.

(a) A ship station transmitting in the 156-162 MHz band is limited to 25 watts carrier power.

## § 80.225 Selective calling equipment.

(a) Equipment for digital selective calling must send the distress alert on the calling channel.
"""

AMATEUR = """# Amateur sample

## § 97.25 License term.

An amateur service license is normally granted for a 10-year term.

## § 97.313 Transmitter power standards.

(a) An amateur station must use the minimum transmitter power necessary to carry out the desired communications.

(b) No amateur station may transmit with a transmitter power exceeding 1.5 kW PEP.
"""

EXTRA = """# More definitions

## § 90.7 Definitions.

Base station. A fixed station used to communicate with mobile stations.
"""


# The glossary ------------------------------------------------------------------------------


def test_the_shipped_glossary_parses_and_covers_the_usual_lay_terms():
    glossary = load_glossary()
    assert len(glossary) >= 150
    terms = {entry.term for entry in glossary.entries}
    for term in ("ham", "rig", "walkie-talkie", "boat", "ERP", "EIRP", "PEP", "DSC", "GMDSS"):
        assert term in terms, term
    assert "EPIRB" in terms
    assert all(entry.expansions for entry in glossary.entries)


def test_terms_match_whole_words_plurals_hyphens_and_the_longest_first():
    glossary = Glossary(
        [
            GlossaryEntry("ham", ("amateur",)),
            GlossaryEntry("ham radio", ("amateur station",)),
            GlossaryEntry("walkie-talkie", ("hand-held portable transmitter",)),
            GlossaryEntry("boat", ("ship",)),
            GlossaryEntry("ERP", ("effective radiated power",)),
        ]
    )
    assert [e.term for e in glossary.matches("Two walkie talkies on my boats")] == [
        "walkie-talkie",
        "boat",
    ]
    assert [e.term for e in glossary.matches("Is ham radio fun? I like ham.")] == [
        "ham radio",
        "ham",
    ]
    assert glossary.matches("Shamrock and hamburgers") == []  # whole words only
    # A term in capitals is an abbreviation: it matches only in capitals.
    assert [e.term for e in glossary.matches("What ERP may I use?")] == ["ERP"]
    assert glossary.matches("an erp system") == []


def test_expansion_adds_only_new_terms_and_rewrites_for_the_dense_query():
    glossary = Glossary(
        [
            GlossaryEntry("boat", ("ship", "vessel")),
            GlossaryEntry("walkie-talkie", ("hand-held portable transmitter",)),
        ]
    )
    expansion = glossary.expand("Can my walkie-talkie reach a ship from the boat?")
    assert expansion.terms == ["hand-held portable transmitter", "vessel"]  # "ship": said
    assert expansion.origins == ["glossary: walkie-talkie", "glossary: boat"]
    assert expansion.text == (
        "Can my walkie-talkie reach a ship from the boat? (hand-held portable transmitter; vessel)"
    )
    assert expansion.dense_text("rewrite") == (
        "Can my hand-held portable transmitter reach a ship from the vessel?"
    )
    assert expansion.dense_text("inline") == (
        "Can my walkie-talkie (hand-held portable transmitter) reach a ship from the boat (vessel)?"
    )
    assert not Glossary([]).expand("Nothing to add")
    # `spoken`: a term the documents use themselves is left as it is.
    spoken = glossary.expand("my boat", spoken=lambda entry: entry.term == "boat")
    assert not spoken and spoken.terms == []


def test_glossary_file_format(tmp_path):
    path = tmp_path / "glossary.tsv"
    path.write_text("# comment\n\nrig\ttransmitter; station apparatus\tnote\n", encoding="utf-8")
    glossary = Glossary.from_file(path)
    assert glossary.entries == [GlossaryEntry("rig", ("transmitter", "station apparatus"), "note")]
    path.write_text("rig\n", encoding="utf-8")
    with pytest.raises(ValueError, match=":1:"):
        Glossary.from_file(path)


# Definitions -------------------------------------------------------------------------------


def test_definitions_are_parsed_from_the_rules_layouts():
    text = (
        "(a) The definitions of terms used in this part are:\n\n"
        "(4) Amateur service. A radiocommunication service for self-training.\n\n"
        "(2) EIRP (equivalent isotropically radiated power). The product of the power.\n\n"
        "Digital selective calling (DSC). A synchronous calling system.\n\n"
        "FAA. Federal Aviation Administration.\n\n"
        "Alaska—public fixed station. A fixed station in Alaska.\n"
    )
    found = parse_definitions(text, "97.3")
    assert [d.term for d in found] == [
        "Amateur service",
        "EIRP (equivalent isotropically radiated power)",
        "Digital selective calling (DSC)",
        "FAA",
        "Alaska—public fixed station",
    ]
    eirp, dsc, faa = found[1], found[2], found[3]
    assert (eirp.abbreviations, eirp.plain_term) == (
        ("EIRP",),
        "equivalent isotropically radiated power",
    )
    assert (dsc.abbreviations, dsc.plain_term) == (("DSC",), "Digital selective calling")
    assert faa.abbreviations == ("FAA",) and faa.body == "Federal Aviation Administration."
    assert all(d.section == "97.3" for d in found)


def test_the_collection_speaks_a_term_from_one_chunk_in_a_hundred():
    definitions = CorpusDefinitions([], None, Counter(), 400, Counter({"SAR": 4, "boat": 3}))
    assert definitions.speaks(GlossaryEntry("SAR", ("specific absorption rate",)))
    assert not definitions.speaks(GlossaryEntry("boat", ("ship",)))  # 3 < 400 / 100
    assert not definitions.speaks(GlossaryEntry("walkie-talkie", ("hand-held",)))
    words = CorpusDefinitions([Definition("Ship", "A vessel.")], None, Counter({"radio": 9}), 9)
    assert words.lay_words("Can my kid use the radio on our boat?") == ["kid", "boat"]
    assert words.lay_words("Can my kid use the radio?", covered=[(7, 10)]) == []


# The real stack ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> str:
    from ingest.pipeline import ingest_paths

    folder = tmp_path_factory.mktemp("expansion") / "docs"
    folder.mkdir()
    (folder / "maritime.md").write_text(MARITIME, encoding="utf-8")
    (folder / "amateur.md").write_text(AMATEUR, encoding="utf-8")
    report = ingest_paths([folder], collection="test_query_expansion", progress=False)
    assert report.files_added == 2
    return "test_query_expansion"


def _retriever(collection: str, mode: str, **options):
    from chains.retrieval import Retriever
    from core.settings import get_settings

    retriever = Retriever(collection, get_settings().model_copy(update={"query_expansion": mode}))
    if options:
        retriever.expander = QueryExpander(mode, **options)
    return retriever


def test_the_setting_picks_the_expansion():
    from core.settings import Settings

    assert Settings(query_expansion="both").query_expansion == "both"
    with pytest.raises(ValueError):
        Settings(query_expansion="thesaurus")
    with pytest.raises(ValueError, match="Unknown query expansion"):
        QueryExpander("thesaurus")


def test_none_searches_the_plain_query(collection):
    plain = _retriever(collection, "none")
    assert plain.expand_query("How much power may my walkie-talkie use?").terms == []
    for mode in ("dense", "bm25", "hybrid"):
        hits = plain.search("transmitter power", k=3, mode=mode)
        assert hits and all("dense" in h.matched_by or "sparse" in h.matched_by for h in hits)


def test_glossary_finds_the_rule_in_every_mode(collection):
    question = "How much power may the walkie-talkie for my boat use?"
    retriever = _retriever(collection, "glossary")
    expansion = retriever.expand_query(question)
    assert "hand-held portable transmitter" in expansion.terms
    assert "glossary: walkie-talkie" in expansion.origins
    for mode in ("dense", "bm25", "hybrid"):
        hits = retriever.search(question, k=2, mode=mode)
        assert hits[0].section == "80.115", (mode, [h.section for h in hits])
    ham = retriever.search("When does my ham license run out?", k=1, mode="bm25")
    assert ham[0].section == "97.25"


def test_an_expanded_hit_carries_the_cosine_of_the_users_question(collection):
    from core.store import get_sentence_model

    question = "How much power may the walkie-talkie for my boat use?"
    retriever = _retriever(collection, "glossary")
    assert retriever.expand_query(question)
    plain = get_sentence_model().encode([question], normalize_embeddings=True)[0]
    for mode in ("dense", "bm25", "hybrid"):
        hits = retriever.search(question, k=5, mode=mode)
        stored = retriever.client.retrieve(collection, [h.id for h in hits], with_vectors=["dense"])
        cosines = {str(r.id): float(np.dot(plain, r.vector["dense"])) for r in stored}
        for hit in hits:
            assert hit.dense_score == pytest.approx(cosines[hit.id], abs=1e-4), mode
    hits = retriever.search(question, k=5, mode="hybrid")
    threshold = sorted(h.dense_score for h in hits)[2]
    kept = retriever.search(question, k=5, mode="hybrid", score_threshold=threshold)
    assert kept and all(h.dense_score >= threshold for h in kept)


def test_definitions_come_from_the_collection(collection):
    retriever = _retriever(collection, "definitions")
    # "boat" is no word of these documents; its closest definition sentence is "Ship or vessel".
    expansion = retriever.expand_query("Can I use a radio on my boat?")
    assert "Ship or vessel" in expansion.terms
    assert "definitions: § 80.5" in expansion.origins
    # An abbreviation the collection defines adds its long form.
    dsc = retriever.expand_query("Which button sends a DSC alert?")
    assert "Digital selective calling" in dsc.terms
    hits = retriever.search("Which button sends a DSC alert?", k=1, mode="bm25")
    assert hits[0].section == "80.225"
    # Nothing to add: a question in the documents' own words.
    assert not retriever.expand_query("What is the license term?")


def test_definitions_are_reread_after_an_ingest(collection, tmp_path):
    from ingest.pipeline import ingest_paths

    retriever = _retriever(collection, "definitions")
    first = collection_definitions(retriever.client, collection, retriever._encode)
    assert {d.term for d in first.definitions} >= {"Associated ship unit", "Ship or vessel"}
    assert collection_definitions(retriever.client, collection, retriever._encode) is first
    (tmp_path / "extra.md").write_text(EXTRA, encoding="utf-8")
    ingest_paths([tmp_path / "extra.md"], collection=collection, progress=False)
    again = collection_definitions(retriever.client, collection, retriever._encode)
    assert again is not first
    assert "Base station" in {d.term for d in again.definitions}


def test_both_applies_the_glossary_then_the_definitions(collection):
    retriever = _retriever(collection, "both")
    expansion = retriever.expand_query("Can my walkie-talkie send a DSC alert?")
    assert expansion.origins[0] == "glossary: walkie-talkie"
    # The glossary's "DSC" came first; the definitions' long form is not added twice.
    assert [t.casefold() for t in expansion.terms].count("digital selective calling") == 1
    assert isinstance(expansion, Expansion) and expansion.to_dict()["terms"] == expansion.terms
    hits = retriever.search("Can my walkie-talkie send a DSC alert?", k=2, mode="hybrid")
    assert {"80.225", "80.115"} & {h.section for h in hits}
