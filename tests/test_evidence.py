"""Passages: pinpoints along the regulation's own structure, table rows, sentences, ranking.

Real eCFR text (the held-out corpus, skipped when absent), the real sample corpus through the
real loaders and chunker, and the real MiniLM embedder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from chains.evidence import (
    PARAGRAPH_QUOTE_CHARS,
    Passage,
    dedupe_passages,
    rank_passages,
    select_evidence,
    sentence_spans,
    split_passages,
    with_paragraph_sentences,
    with_whole_lists,
)
from tests.conftest import ECFR_CORPUS, SAMPLE_CORPUS


def _chunk(text: str, chunk_id: str = "c1", **metadata) -> SimpleNamespace:
    """A retrieved chunk as the chains see it (duck-typed like RetrievedChunk)."""
    return SimpleNamespace(id=chunk_id, text=text, metadata=metadata, score=0.5, dense_score=0.5)


def _section(shared_corpus: Path, section: str) -> SimpleNamespace:
    part = section.split(".")[0]
    text = (shared_corpus / f"part{part}" / "txt" / f"{section}.txt").read_text()
    heading = text.splitlines()[0]
    return _chunk(
        text, section=section, heading=heading, source=f"{section}.txt", char_start=0, para_path=[]
    )


def _by_pinpoint(passages: list[Passage]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for passage in passages:
        out.setdefault(passage.pinpoint, []).append(passage.text)
    return out


@pytest.fixture(scope="module")
def embedder():
    from core.store import get_sentence_model

    return get_sentence_model()


@pytest.fixture(scope="module")
def chunker(embedder):
    from core.settings import get_settings
    from ingest.chunking import Chunker

    settings = get_settings()
    return Chunker(
        embedder.tokenizer,
        settings.chunk_tokens,
        settings.chunk_overlap_tokens,
        embedder.max_seq_length,
    )


def _ingested_chunks(chunker, path: Path) -> list[tuple[SimpleNamespace, str]]:
    """(chunk as stored, its segment's text) for a file, through the real loader and chunker."""
    from ingest.loaders import load_file

    loaded = load_file(path, path.read_bytes())
    out = []
    for index, chunk in enumerate(chunker.chunk(loaded)):
        segment = next(
            s.text
            for s in loaded.segments
            if s.text[chunk.char_start : chunk.char_start + len(chunk.text)] == chunk.text
        )
        metadata = {
            "source": path.name,
            "page": chunk.page,
            "section": chunk.section,
            "heading": chunk.heading,
            "chunk_index": index,
            "char_start": chunk.char_start,
            "para_path": chunk.para_path,
        }
        out.append((_chunk(chunk.text, f"{path.name}#{index}", **metadata), segment))
    return out


# eCFR structure --------------------------------------------------------------------------


def test_97_313_pinpoints_and_verbatim_spans(shared_corpus):
    chunk = _section(shared_corpus, "97.313")
    passages = split_passages(chunk)
    pins = _by_pinpoint(passages)
    assert pins["§ 97.313(b)"] == [
        "No station may transmit with a transmitter power exceeding 1.5 kW PEP."
    ]
    assert pins["§ 97.313(j)"] == [
        "No station may transmit with a transmitter output exceeding 10 W PEP when the station "
        "is transmitting a SS emission type."
    ]
    # (i) after (h) is the letter (i), not a roman numeral; its long paragraph is quoted
    # sentence by sentence, every sentence under the same pinpoint.
    assert len(pins["§ 97.313(i)"]) == 4
    assert pins["§ 97.313(i)"][2] == (
        "A half-wave dipole antenna will be presumed to have a gain of 1 (0 dBd)."
    )
    assert "§ 97.313(c)(2)" in pins and "§ 97.313(l)" in pins and "§ 97.313(m)" in pins
    for passage in passages:  # verbatim slices, offsets in the chunk and in the source
        assert chunk.text[passage.span[0] : passage.span[1]] == passage.text
        assert passage.source_span == passage.span  # char_start 0
        assert passage.section == "97.313" and passage.chunk_id == "c1"
    texts = " ".join(p.text for p in passages)
    assert "FR" not in texts and "Transmitter power standards." not in texts  # note, heading
    assert not any(p.text.startswith("(") for p in passages)  # markers are not quoted


def test_list_items_carry_their_lead_in(shared_corpus):
    passages = split_passages(_section(shared_corpus, "97.313"))
    item = next(p for p in passages if p.pinpoint == "§ 97.313(c)(1)")
    assert item.text == "On the 10.10-10.15 MHz segment;"
    assert (
        item.context
        == "No station may transmit with a transmitter power output exceeding 200 W PEP:"
    )
    assert item.quote == f"{item.context} … {item.text}"
    assert "200 W PEP" in item.evidence
    # The whole list continues the lead-in, so (3), a sentence-looking item, reads under it too.
    third = next(p for p in passages if p.pinpoint == "§ 97.313(c)(3)")
    assert third.context == item.context


def test_97_215_intro_and_paragraph_c(shared_corpus):
    passages = split_passages(_section(shared_corpus, "97.215"))
    assert [p.pinpoint for p in passages] == [
        "§ 97.215",
        "§ 97.215(a)",
        "§ 97.215(b)",
        "§ 97.215(c)",
    ]
    intro, *_, power = passages
    assert intro.paragraph is None and intro.text.endswith("may be operated as follows:")
    assert power.paragraph == "(c)" and power.text == "The transmitter power must not exceed 1 W."
    assert power.context is None  # a sentence of its own: quoted alone


def test_80_215_nesting_roman_and_letter_i(shared_corpus):
    passages = split_passages(_section(shared_corpus, "80.215"))
    pins = _by_pinpoint(passages)
    assert pins["§ 80.215(e)(1)"][0] == "Ship stations 156-162 MHz—25W"
    assert "All ships—Open waters; 4000-27500 kHz—1.5kW" in pins["§ 80.215(d)(2)(iii)"]
    assert "100-160 kHz—80kW" in pins["§ 80.215(b)(1)(i)"]  # rows under "(i) Radiotelegraphy:"
    assert "4000-27500 kHz—10kW" in pins["§ 80.215(b)(1)(ii)"]
    # "(i)" under (h)(2) is roman (an "(ii)" follows); "(i)" after (h)(5) is the letter.
    assert pins["§ 80.215(h)(2)(i)"][0].startswith("A description of the interference contour")
    assert pins["§ 80.215(h)(3)(iii)"][0].startswith("Agrees to make such adjustments")
    assert pins["§ 80.215(i)"][0].startswith("A ship station must have a transmitter output")
    assert pins["§ 80.215(i)(1)"][0].startswith("Increases exceeding 25 watts")
    assert pins["§ 80.215(n)(3)"][0].startswith("For all other transponder stations")
    row = next(p for p in passages if p.text == "100-160 kHz—80kW")
    assert row.context == "Public coast stations, except Alaska: … Radiotelegraphy:"
    assert not any("[Reserved]" in p.text for p in passages)
    assert not any(re.fullmatch(r"[\d\s]+", p.text) for p in passages)  # footnote numbers


def test_chunk_starting_mid_section_resolves_its_path(shared_corpus):
    text = (shared_corpus / "part80" / "txt" / "80.215.txt").read_text()
    meta = {"section": "80.215", "source": "80.215.txt"}
    # Starts at "(2)" under (h): para_path holds the parent only.
    start = text.index("(2) Coast stations located less than")
    chunk = _chunk(text[start : start + 900], char_start=start, para_path=["(h)"], **meta)
    passages = split_passages(chunk)
    assert passages[0].pinpoint == "§ 80.215(h)(2)"
    assert passages[0].source_span[0] == start + 4  # after "(2) "
    assert text[slice(*passages[0].source_span)] == passages[0].text
    assert "§ 80.215(h)(2)(i)" in {p.pinpoint for p in passages}
    # Starts inside (d)(2)(ii)'s text (a window), with no marker of its own.
    start = text.index("2182 kHz—emergency")
    chunk = _chunk(
        text[start : start + 300], char_start=start, para_path=["(d)", "(2)", "(ii)"], **meta
    )
    first, *rest = split_passages(chunk)
    assert first.pinpoint == "§ 80.215(d)(2)(ii)"
    assert first.text == "2182 kHz—emergency, urgency, or safety ship to shore—400W"
    assert any(p.pinpoint == "§ 80.215(d)(2)(iii)" for p in rest)
    # Starts at "(i) A ship station": [] says it is a top paragraph, so the letter (i).
    start = text.index("(i) A ship station")
    chunk = _chunk(text[start : start + 500], char_start=start, para_path=[], **meta)
    assert [p.pinpoint for p in split_passages(chunk)][:2] == ["§ 80.215(i)", "§ 80.215(i)(1)"]


def test_ingested_chunks_agree_with_the_whole_section(shared_corpus, chunker):
    """Every chunk the real chunker makes resolves the same pinpoints as the whole text."""
    path = shared_corpus / "part80" / "txt" / "80.215.txt"
    whole = {p.source_span: p.pinpoint for p in split_passages(_section(shared_corpus, "80.215"))}
    chunks = _ingested_chunks(chunker, path)
    assert len(chunks) > 5
    assert any(c.metadata["para_path"] for c, _ in chunks)  # some start inside a paragraph
    checked = 0
    for chunk, segment in chunks:
        for passage in split_passages(chunk):
            assert segment[slice(*passage.source_span)] == passage.text
            if passage.source_span in whole:
                assert passage.pinpoint == whole[passage.source_span], passage.text
                checked += 1
    assert checked > 60


# Tables and prose ------------------------------------------------------------------------


def test_pipe_table_rows_keep_their_header(chunker):
    path = SAMPLE_CORPUS / "part15_unintentional_radiators.md"
    passages = [p for c, _ in _ingested_chunks(chunker, path) for p in split_passages(c)]
    rows = [p for p in passages if p.pinpoint == "§ 15.109(a)" and p.context]
    assert [r.text for r in rows][:2] == ["| 30–88 | 100 | 40.0 |", "| 88–216 | 150 | 43.5 |"]
    assert rows[0].context.startswith("| Frequency of emission (MHz) | Field strength")
    assert "(dBμV/m)" in rows[0].evidence and "40.0" in rows[0].evidence
    assert not any(set(p.text) <= set("|- :") for p in passages)  # no "| --- |" rules


def test_space_aligned_table_rows(chunker):
    path = SAMPLE_CORPUS / "part15_conducted_limits.txt"
    passages = [p for c, _ in _ingested_chunks(chunker, path) for p in split_passages(c)]
    row = next(p for p in passages if p.pinpoint == "§ 15.107(a)" and p.text.startswith("0.5 – 5"))
    assert row.text.split() == ["0.5", "–", "5", "56", "46"]
    assert row.context.splitlines() == [
        "Class B conducted limits",
        "Frequency of emission (MHz)    Quasi-peak (dBμV)    Average (dBμV)",
    ]
    assert not any(p.text == "Class B conducted limits" for p in passages)  # the title


def test_docx_table_and_pdf_page_pinpoints(chunker):
    docx = SAMPLE_CORPUS / "kdb_178919_permissive_changes.docx"
    passages = [p for c, _ in _ingested_chunks(chunker, docx) for p in split_passages(c)]
    row = next(
        p for p in passages if p.text.startswith("Add an antenna of the same type with higher")
    )
    assert row.context == "Change | Classification"
    assert row.pinpoint == "kdb_178919_permissive_changes.docx, 6. Examples"
    pdf = SAMPLE_CORPUS / "kdb_447498_rf_exposure.pdf"
    passages = [p for c, _ in _ingested_chunks(chunker, pdf) for p in split_passages(c)]
    reduction = next(p for p in passages if "0.8 W/kg or less" in p.text)
    assert reduction.pinpoint == "kdb_447498_rf_exposure.pdf, p. 3" and reduction.page == 3
    assert "\n" in reduction.text and "\n" not in reduction.quote  # PDF wraps are not quoted


def test_sentences_do_not_split_inside_numbers_and_abbreviations():
    text = (
        "(a) The limit in § 97.3 applies, e.g. to Novice stations. It is 1.5 kW PEP for U.S. "
        "stations, i.e. those licensed under Sec. 97.5 and Form No. 605. A transmitter "
        "below 0.5 W is exempt. Class A devices are not. Stations outside the United States "
        "follow the rules of their own administration."
    )
    assert len(text) > 240  # long enough to be quoted sentence by sentence
    spans = sentence_spans(text, 4)
    sentences = [text[a:b] for a, b in spans]
    assert sentences == [
        "The limit in § 97.3 applies, e.g. to Novice stations.",
        "It is 1.5 kW PEP for U.S. stations, i.e. those licensed under Sec. 97.5 and Form No. 605.",
        "A transmitter below 0.5 W is exempt. Class A devices are not.",  # short: joined
        "Stations outside the United States follow the rules of their own administration.",
    ]
    passages = split_passages(_chunk(text, section="97.99"))
    assert [p.text for p in passages] == sentences
    assert {p.pinpoint for p in passages} == {"§ 97.99(a)"}


def test_non_english_and_empty_chunks():
    assert split_passages(_chunk("")) == []
    passages = split_passages(_chunk("무선국은 1 W를 초과할 수 없습니다.", source="ko.txt"))
    assert [p.pinpoint for p in passages] == ["ko.txt"]


# Ranking ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def power_passages(shared_corpus) -> list[Passage]:
    return [
        p
        for section in ("97.215", "97.313", "80.215")
        for p in split_passages(_section(shared_corpus, section))
    ]


def test_rank_finds_the_telecommand_limit(power_passages, embedder):
    question = "What is the maximum transmitter power for telecommand of a model craft?"
    top = rank_passages(question, power_passages, embedder, k=3)
    assert len(top) == 3
    assert top[0].pinpoint == "§ 97.215(c)"
    assert [p.score for p in top] == sorted((p.score for p in top), reverse=True)
    assert all(-1 <= p.dense_score <= 1 for p in top)
    assert top[0].score - top[1].score > 0.05


def test_rank_uses_the_section_and_paragraph_the_question_names(power_passages, embedder):
    top = rank_passages("What does § 97.313(c)(1) say?", power_passages, embedder, k=2)
    assert top[0].pinpoint == "§ 97.313(c)(1)"
    top = rank_passages("Ship station power on 156-162 MHz?", power_passages, embedder, k=1)
    assert top[0].pinpoint == "§ 80.215(e)(1)"


def test_a_definition_question_is_answered_by_the_definition(chunker, embedder):
    """ "What is a third-party communication?" is § 97.3(a)(47), the definition; § 97.115,
    on third party communications, uses the words more and outranked it; "What is a beacon
    station?" is § 97.3(a)(9) "Beacon.", not § 97.203 on beacon stations (default corpus)."""
    from chains.evidence import asked_term, passages_from_chunks

    chunks = [
        chunk
        for section in ("97.3", "97.115", "97.203")
        for chunk, _ in _ingested_chunks(chunker, ECFR_CORPUS / "part97" / f"{section}.xml")
    ]
    passages = passages_from_chunks(chunks)
    # As retrieved for the question: § 97.115's chunks first.
    order = sorted((c.id for c in chunks), key=lambda chunk_id: "97.115" not in chunk_id)
    question = "What is a third-party communication?"
    top = rank_passages(question, passages, embedder, k=2, chunk_order=order)
    assert top[0].pinpoint == "§ 97.3(a)(47)"
    top = rank_passages("What does PEP mean?", passages, embedder, k=1)
    assert top[0].pinpoint == "§ 97.3(b)(9)"
    order = sorted((c.id for c in chunks), key=lambda chunk_id: "97.203" not in chunk_id)
    top = rank_passages("What is a beacon station?", passages, embedder, k=1, chunk_order=order)
    assert top[0].pinpoint == "§ 97.3(a)(9)"  # "Beacon. An amateur station transmitting ..."
    # Asked for a limit, not what a term is: no definition signal.
    assert asked_term("What is the maximum PEP on the 60 m band?") != {"pep"}


def test_select_evidence_numbers_the_best_passages(shared_corpus, embedder):
    chunks = [_section(shared_corpus, s) for s in ("97.313", "97.215")]
    chosen = select_evidence("Telecommand of a model craft: what power?", chunks, embedder, k=4)
    assert [p.n for p in chosen] == [1, 2, 3, 4]
    assert chosen[0].pinpoint == "§ 97.215(c)" and chosen[0].chunk_id == "c1"


def test_overlapping_windows_are_deduplicated():
    text = "(a) First sentence of a long rule here.\n\n(b) Second rule of the section is this."
    start = text.index("(b)")
    one = _chunk(text, "c1", section="1.1", source="s", char_start=0)
    two = _chunk(text[start:], "c2", section="1.1", source="s", char_start=start, para_path=[])
    passages = split_passages(one) + split_passages(two)
    assert len(passages) == 3
    unique = dedupe_passages(passages)
    assert [p.chunk_id for p in unique] == ["c1", "c1"]


def test_sections_of_one_file_are_never_duplicates():
    """Spans count from each section's start: equal spans in two sections are two rules."""
    text = "(a) The first rule of this section is here."
    one = _chunk(text, "c1", section="2.901", source="part2.xml", char_start=0)
    two = _chunk(text.replace("first", "other"), "c2", section="2.902", source="part2.xml",
                 char_start=0)  # fmt: skip
    assert len(dedupe_passages(split_passages(one) + split_passages(two))) == 2


def test_to_dict_is_json(power_passages):
    data = json.loads(json.dumps(power_passages[5].to_dict()))
    assert set(data) >= {"text", "pinpoint", "span", "source_span", "score", "n", "quote"}


def test_passages_of_ingested_chunks_point_into_the_source(corpus_collection):
    """Through the store: char_start and para_path come back in the chunk metadata."""
    from ingest.loaders import load_file
    from ingest.pipeline import document_text

    for name in ("part15_247_spread_spectrum.html", "kdb_447498_rf_exposure.pdf"):
        loaded = load_file(SAMPLE_CORPUS / name, (SAMPLE_CORPUS / name).read_bytes())
        stored = document_text(name, collection=corpus_collection)
        assert stored and all("char_start" in c["metadata"] for c in stored)
        chunks = [
            SimpleNamespace(id=c["id"], text=c["text"], metadata=c["metadata"]) for c in stored
        ]
        pins = set()
        for chunk in chunks:
            segment = next(s for s in loaded.segments if s.page == chunk.metadata["page"])
            for passage in split_passages(chunk):
                assert segment.text[slice(*passage.source_span)] == passage.text
                assert passage.chunk_id == chunk.id
                pins.add(passage.pinpoint)
        if name.endswith(".html"):
            assert {"§ 15.247(a)(1)(iii)", "§ 15.247(b)(3)", "§ 15.247(c)(1)(i)"} <= pins
        else:
            assert {f"kdb_447498_rf_exposure.pdf, p. {n}" for n in (1, 2, 3, 4)} <= pins


# § 80.317(b) and § 97.317(a), as published (eCFR, 2024-11-14).
ALARM = (
    "§ 80.317 Radiotelephone alarm signal generator test procedures.\n\n"
    "(b) The international radiotelephone alarm signal consists of two substantially "
    "sinusoidal audio frequency tones transmitted alternately. One tone must have a frequency "
    "of 2200 Hertz and the other a frequency of 1300 Hertz, the duration of each tone being "
    "250 milliseconds. When generated by automatic means, the radiotelephone alarm signal must "
    "be transmitted continuously for a period of at least 30 seconds, but not exceeding one "
    "minute; when generated by other means, the signal must be transmitted as continuously as "
    "practicable over a period of approximately one minute. The purpose of this special signal "
    "is to attract the attention of the person on watch or to actuate automatic devices giving "
    "the alarm.\n"
)
AMPLIFIER = (
    "§ 97.317 Standards for certification of external RF power amplifiers.\n\n"
    "(a) To receive a grant of certification, the amplifier must:\n\n"
    "(1) Exhibit no amplification (0 dB gain) between 26 MHz and 28 MHz.\n\n"
    "(2) Not be capable of amplifying the input RF power (driving signal) by more than 15 dB "
    "gain. Gain is defined as the ratio of the input RF power to the output RF power of the "
    "amplifier where both power measurements are expressed in peak envelope power or mean "
    "power.\n"
)


@pytest.mark.parametrize(
    ("text", "section", "kept", "quoted"),
    [
        # The best sentence introduces the answer; the next one states it.
        (ALARM, "80.317", "consists of two", "2200 Hertz and the other a frequency of 1300 Hertz"),
        # The best sentence glosses the answer; the one before states it, with its lead-in.
        (AMPLIFIER, "97.317", "Gain is defined", "by more than 15 dB gain. Gain is defined"),
    ],
)
def test_a_sentence_is_quoted_with_its_paragraph(text, section, kept, quoted):
    chunk = _chunk(text, section=section, char_start=0, para_path=[])
    candidates = split_passages(chunk)
    best = next(p for p in candidates if kept in p.text)
    assert quoted not in best.text  # a sentence of a long paragraph on its own
    [shown] = with_paragraph_sentences([best], candidates, {"c1": text})
    assert quoted in shown.text and shown.text == text[shown.span[0] : shown.span[1]]
    assert shown.pinpoint == best.pinpoint and len(shown.text) <= PARAGRAPH_QUOTE_CHARS
    [short] = with_paragraph_sentences([best], candidates, {"c1": text}, limit=len(shown.text) - 1)
    assert len(short.text) < len(shown.text)  # the limit holds: fewer sentences
    # A kept sentence the extended quote now holds is not quoted twice.
    neighbours = [p for p in candidates if p.paragraph == best.paragraph]
    assert len(with_paragraph_sentences(neighbours, candidates, {"c1": text})) < len(neighbours)


ACKNOWLEDGEMENT = (  # § 80.322, as published (eCFR, 2024-11-14)
    "§ 80.322 Form of acknowledgement of distress message.\n\n"
    "(b) The acknowledgement of receipt of a radiotelephone distress message is transmitted in "
    "the following form:\n\n(1) The distress signal MAYDAY;\n\n(2) The call sign or other "
    "identification of the station sending the distress message, spoken three times;\n\n"
    "(3) The words THIS IS;\n\n(4) The call sign or other identification of the station "
    "acknowledging receipt, spoken three times;\n\n(5) The word RECEIVED;\n\n"
    "(6) The distress signal MAYDAY.\n"
)


def test_two_items_of_one_list_quote_the_whole_list():
    """Asked which word follows the acknowledging station's identification, the ranking kept
    items (4) and (2), not (5) "RECEIVED": the order is read off the whole list."""
    chunk = _chunk(ACKNOWLEDGEMENT, section="80.322", char_start=0, para_path=[])
    candidates = split_passages(chunk)
    item = {p.paragraph: p for p in candidates}
    [shown] = with_whole_lists(
        [item["(b)(4)"], item["(b)(2)"]], candidates, {"c1": ACKNOWLEDGEMENT}
    )
    assert shown.pinpoint == "§ 80.322(b)" and shown.text.startswith("(1) The distress signal")
    assert "(4) The call sign" in shown.text and "(5) The word RECEIVED" in shown.text
    assert shown.text == ACKNOWLEDGEMENT[shown.span[0] : shown.span[1]]
    # One kept item keeps its own pinpoint: the ranking chose it.
    assert with_whole_lists([item["(b)(5)"]], candidates, {"c1": ACKNOWLEDGEMENT}) == [
        item["(b)(5)"]
    ]


def test_a_lead_in_is_quoted_with_its_best_item():
    """A lead-in ("... is transmitted in the following form:") says nothing by itself. When
    its list does not fit in the quote, its best-ranked item is quoted under it, ranked as
    the lead-in was; a table's unit row ("LF | kHz | kHz |") is never that item."""
    chunk = _chunk(ACKNOWLEDGEMENT, section="80.322", char_start=0, para_path=[])
    candidates = split_passages(chunk)
    item = {p.paragraph: p for p in candidates}
    lead_in = next(p for p in candidates if p.text.endswith("following form:"))
    for passage in candidates:
        passage.score = 0.9 if passage is item["(b)(5)"] else 0.1
    texts = {"c1": ACKNOWLEDGEMENT}
    assert with_whole_lists([lead_in], candidates, texts, limit=60) == [item["(b)(5)"]]
    assert with_whole_lists([lead_in], candidates, texts)[0].pinpoint == "§ 80.322(b)"  # fits

    table = (
        "(d) For a station having a control operator who has been granted an operator license "
        "of General Class:\n\nWavelength band | ITU Region 1 | ITU Region 2\n\n"
        "HF | MHz | MHz |\n\n20 m | 14.025-14.150 | 14.025-14.150\n\n"
        "17 m | 18.068-18.168 | 18.068-18.168\n"
    )
    rows = split_passages(_chunk(table, section="97.301", char_start=0, para_path=[]))
    lead_in = rows[0]
    for passage in rows:
        passage.score = 0.9 if "MHz |" in passage.text else 0.5 if "20 m" in passage.text else 0.1
    lead_in.score = 0.7
    [shown] = with_whole_lists([lead_in], rows, {"c1": table})
    assert shown.text.startswith("20 m | 14.025-14.150") and shown.pinpoint == "§ 97.301(d)"
    assert shown.quote.startswith(lead_in.text + " … Wavelength band |")  # then its header
    assert shown.score == 0.7


POWER_STANDARDS = (  # § 97.313(a)-(d), as published (eCFR, 2024-11-14)
    "§ 97.313 Transmitter power standards.\n\n(a) An amateur station must use the minimum "
    "transmitter power necessary to carry out the desired communications.\n\n(b) No station may "
    "transmit with a transmitter power exceeding 1.5 kW PEP.\n\n(c) No station may transmit with "
    "a transmitter power output exceeding 200 W PEP:\n\n(1) On the 10.10-10.15 MHz segment;\n\n"
    "(2) On the 7.050-7.075 MHz segment when the station is within ITU Regions 1 or 3.\n\n"
    "(d) No station may transmit with a transmitter power exceeding 25 W PEP on the VHF 1.25 m "
    "band when the control operator is a Novice operator.\n"
)


def test_a_whole_list_of_paragraphs_has_no_item_lead_in():
    """Kept (b), (d) and (c)(1) of § 97.313: the section's paragraphs are quoted from (a), and
    (c)(1)'s lead-in ("... 200 W PEP:") is not put before them as if it introduced the list
    (it did: the quote opened with "exceeding 200 W PEP: … (a) An amateur station")."""
    chunk = _chunk(POWER_STANDARDS, section="97.313", char_start=0, para_path=[])
    candidates = split_passages(chunk)
    item = {p.paragraph: p for p in candidates}
    [shown] = with_whole_lists(
        [item["(c)(1)"], item["(b)"], item["(d)"]], candidates, {"c1": POWER_STANDARDS}
    )
    assert shown.pinpoint == "§ 97.313" and shown.quote.startswith("(a) An amateur station")
    assert "1.5 kW PEP" in shown.quote and shown.quote.endswith("a Novice operator.")


def test_table_rows_are_quoted_one_by_one():
    """Rows of one table share a paragraph; each is still quoted alone, under its header."""
    table = (
        "Kind of device | Statement required\n"
        "Receiver for a licensed service | Operation subject to the condition that ...\n"
        "All other devices | Two-condition statement\n"
    )
    chunk = _chunk(table, source="labelling.html", heading="Which statement applies")
    rows = split_passages(chunk)
    assert len(rows) == 2
    assert with_paragraph_sentences(rows[:1], rows, {"c1": table}) == rows[:1]
