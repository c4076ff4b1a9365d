"""The asked case picks the row, and the answer's first line says the amount (real eCFR text)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chains.evidence import Passage, rank_passages
from chains.qualifiers import (
    bands_as_written,
    expand_abbreviations,
    find_abbreviations,
    find_band_ranges,
    qualifier_match,
    question_qualifiers,
)
from chains.short_answer import format_short_answer, short_answer, stated_amount

# § 97.313, as published (eCFR, 2024-11-14).
P97_313 = {
    "(b)": "No station may transmit with a transmitter power exceeding 1.5 kW PEP.",
    "(c)(1)": "On the 10.10-10.15 MHz segment;",
    "(d)": "No station may transmit with a transmitter power exceeding 25 W PEP on the VHF "
    "1.25 m band when the control operator is a Novice operator.",
    "(i)": "No station may transmit with an effective radiated power (ERP) exceeding 100 W PEP "
    "on the 60 m band.",
    "(j)": "No station may transmit with a transmitter output exceeding 10 W PEP when the "
    "station is transmitting a SS emission type.",
    "(m)": "No station may transmit with a peak equivalent isotropically radiated power (EIRP) "
    "exceeding 316 W in the 76-81 GHz (4 mm) band.",
}
INTRO_C = "No station may transmit with a transmitter power output exceeding 200 W PEP:"
DEFINITION_SS = (
    "(8) SS. Spread spectrum emissions using bandwidth-expansion modulation emissions having "
    "designators with A, C, D, F, G, H, J or R as the first symbol."
)


def passage(paragraph: str, n: int = 1) -> Passage:
    text = P97_313[paragraph]
    context = INTRO_C if paragraph == "(c)(1)" else None
    return Passage(
        text, f"§ 97.313{paragraph}", "97.313", paragraph, "97.313.txt", None,
        (0, len(text)), None, f"c{paragraph}", context=context,
        heading="§ 97.313 Transmitter power standards.", n=n,
    )  # fmt: skip


def test_the_band_plan_is_read_from_tables_and_from_running_text():
    """§ 97.301's rows give most bands; the 60 m band is in no table, only in § 97.303(h)'s
    words, and § 97.313(k) names the 2200 m band beside its range."""
    plan = find_band_ranges(
        [
            "20 m | 14.00-14.35 | 14.00-14.35 | 14.00-14.35",
            "(h) 60 m band: (1) In the 5330.5-5406.4 kHz band (60 m band), amateur stations",
            "in the 135.7-137.8 kHz (2200 m) band with",
            "the 5.650-5.725 GHz band (60 m band)",  # 1000 times off the 60 m band: not read
        ]
    )
    assert plan == {
        "20m": (14.0e6, 14.35e6),
        "60m": (5330.5e3, 5406.4e3),
        "2200m": (135.7e3, 137.8e3),
    }


def test_band_frequency_and_class_pick_their_row():
    sixty = question_qualifiers("How much power can I run on the 60-meter ham band?")
    assert sixty.bands == {"60m"}
    assert qualifier_match(sixty, P97_313["(i)"]) == 1
    assert qualifier_match(sixty, P97_313["(d)"]) == -1  # another band
    assert qualifier_match(sixty, P97_313["(b)"]) == 0  # the general rule names no band

    freq = question_qualifiers("What is the most power I may use on 10.140 MHz?")
    assert qualifier_match(freq, f"{INTRO_C}\n{P97_313['(c)(1)']}") == 1  # inside the range
    assert qualifier_match(freq, P97_313["(m)"]) == -1

    novice = question_qualifiers("What power may a Novice Class operator use on 1.25 m?")
    assert "novice" in novice.classes
    assert qualifier_match(novice, P97_313["(d)"]) == 1


def test_abbreviations_are_read_from_the_documents():
    found = find_abbreviations([DEFINITION_SS, P97_313["(i)"], P97_313["(m)"]])
    assert found["SS"] == "spread spectrum"
    assert found["ERP"] == "effective radiated power"
    assert found["EIRP"] == "equivalent isotropically radiated power"
    assert "spread spectrum" in expand_abbreviations(P97_313["(j)"], found)
    assert "SS" in expand_abbreviations("a spread spectrum emission", found)


@pytest.mark.parametrize(
    ("question", "best"),
    [
        ("What power limit applies to a spread spectrum emission?", "(j)"),
        ("What is the maximum power on the 60 m band?", "(i)"),
        ("What is the most transmitter power allowed on 10.140 MHz?", "(c)(1)"),
    ],
)
def test_the_row_for_the_asked_case_ranks_first(question, best):
    """Before qualifiers, the 60 m question quoted (m) (76-81 GHz) and spread spectrum (b)."""
    candidates = [passage(p, n) for n, p in enumerate(P97_313, 1)]
    abbreviations = find_abbreviations([DEFINITION_SS])
    ranked = rank_passages(question, candidates, k=3, abbreviations=abbreviations)
    assert ranked[0].paragraph == best


def test_a_counted_set_picks_the_paragraph_that_counts_it():
    """ "The two conditions" is § 15.5(b) ("subject to two conditions"), not § 15.1(a), which
    mentions "other conditions" and outranked it on similarity (data/samples)."""
    question = question_qualifiers("What are the two conditions of operation for a Part 15 device?")
    assert question.counts == {("2", "condition")}  # "Part 15" is a reference, not a count
    assert qualifier_match(question, "is subject to two conditions: the device may not") == 1
    assert qualifier_match(question, "and other conditions that govern the marketing") == 0
    assert not question_qualifiers("How long is the term, two years?").counts  # an amount


def test_the_short_answer_is_the_amount_in_the_passage_s_words():
    ss = passage("(j)")
    words = short_answer("What power limit applies to a spread spectrum emission?", [ss])
    assert format_short_answer(words, ss) == "At most 10 W PEP (§ 97.313(j)) [1]"
    # "the most ... output" asks for an amount though it says neither "maximum" nor "power".
    asked = "What is the most transmitter output allowed when sending a SS emission?"
    assert stated_amount(asked, ss) == "at most 10 W PEP"
    # A list item reads its amount from its lead-in; the asked frequency is no answer.
    row = passage("(c)(1)", n=2)
    assert stated_amount("What is the maximum power on 10.140 MHz?", row) == "at most 200 W PEP"
    # No amount of the asked kind, or no amount asked: no short answer.
    assert stated_amount("How long must logs be kept?", ss) is None
    assert stated_amount("Can I build my own amplifier?", ss) is None
    # No kind of amount named ("limits between 5 and 30 MHz" answered "150 kHz"): none.
    assert stated_amount("What are the limits between 5 and 30 MHz?", row) is None
    # Two amounts of the asked kind: ambiguous, no short answer (§ 80.111(a)(4)).
    calls = replace(
        ss,
        text="When a called station does not reply to a call sent three times at intervals "
        "of two minutes, the calling must cease for fifteen minutes.",
    )
    assert stated_amount("How long can I keep calling another boat?", calls) is None
    # A count is a number and what it counts, not a year before "that" (§ 97.17(b)(2)).
    club = replace(ss, text="an organization exempt under the Internal Revenue Code of 1986 "
                   "that provides services")  # fmt: skip
    assert stated_amount("How many members does a club need?", club) is None
    team = replace(club, text="Each examination for an amateur operator license must be "
                   "administered by a team of at least 3 VEs")  # fmt: skip
    assert stated_amount("How many examiners must give an exam?", team) == "at least 3 VEs"
    # A reference level is no amount (§ 80.215(k): "+ 40 dB relative to one watt").
    earth = replace(ss, text="the maximum e.i.r.p by a ship earth station must not exceed + 40 "
                    "dB relative to one watt in any 4 kHz band")  # fmt: skip
    assert stated_amount("What is the maximum power of a ship earth station?", earth) is None
    # "When may ...?" asks for a condition or a time, not the frequency band it mentions
    # (KDB 447498 D01).
    sar = replace(ss, text="testing of the other required channels within a frequency band "
                  "is not needed when the reported 1-g SAR is 0.8 W/kg or less, for transmission "
                  "bands of 100 MHz or less")  # fmt: skip
    assert stated_amount("When may testing of other channels in a band be skipped?", sar) is None
    assert stated_amount("What band width may skip testing other channels?", sar) == "100 MHz"
    # The question names what it asks for, and that is no amount: the band it names is not
    # asked (§ 97.303(h) answered the 60 m band's phone mode with "5330.5-5406.4 kHz").
    sixty = replace(ss, text="In the 5330.5-5406.4 kHz band (60 m band), amateur stations may "
                    "transmit only on the five center frequencies")  # fmt: skip
    assert stated_amount("On the 60 m band, phone is restricted to which mode?", sixty) is None
    assert stated_amount("Which frequency range is the 60 m band?", sixty) == "5330.5-5406.4 kHz"


def test_the_short_answer_reads_the_chosen_item_of_a_list_quoted_whole():
    """Ranked first, § 97.313(i) states one amount for the 60 m band; quoted with its
    neighbour (d) (25 W PEP on the 1.25 m band), the quote states two. The short answer
    reads the chosen item and cites the quote that holds it."""
    from chains.evidence import holds
    from chains.rag import lead_short_answer

    first, second = passage("(i)"), passage("(d)")
    whole = f"{first.text} {second.text}"
    chosen = [
        replace(first, chunk_id="c", span=(0, len(first.text)), score=1.0),
        replace(second, chunk_id="c", span=(len(first.text) + 1, len(whole)), score=0.95),
    ]
    quoted = replace(chosen[0], text=whole, span=(0, len(whole)), pinpoint="§ 97.313", n=2)
    assert all(holds(quoted, item) for item in chosen)
    question = "What is the maximum power on the 60 m band?"
    assert short_answer(question, [quoted]) is None  # 100 W and 25 W: which?
    answer = lead_short_answer(question, [quoted], chosen, {})
    assert answer == "At most 100 W PEP (§ 97.313(i)) [2]"


def test_no_short_answer_when_a_close_rival_states_another_amount_for_the_same_case():
    question = "What power limit applies on the 60 m band?"
    sixty, other = passage("(i)", 1), passage("(d)", 2)
    sixty.score, other.score = 1.0, 0.95
    # (d) names another band: no rival.
    assert short_answer(question, [sixty, other]) == "at most 100 W PEP"
    rival = replace(other, text="No station may transmit with 50 W PEP on the 60 m band.")
    assert short_answer(question, [sixty, rival]) is None  # same case, another amount
    rival.score = 0.8  # not quoted beside it
    assert short_answer(question, [sixty, rival]) == "at most 100 W PEP"


def test_band_names_are_searched_as_the_rules_write_them():
    """ "2200 meter band" is searched as "2200 m band": "meter" matched Part 80's antenna
    heights in meters, and the keyword ranking put § 80.215 before § 97.313."""
    assert bands_as_written("What is the maximum power on the 2200 meter band?") == (
        "What is the maximum power on the 2200 m band?"
    )
    assert bands_as_written("the 10-meter band, the 23 centimeter band") == (
        "the 10 m band, the 23 cm band"
    )
    assert bands_as_written("in the 135.7-137.8 kHz (2200 m) band") == (
        "in the 135.7-137.8 kHz (2200 m) band"
    )
    assert (
        bands_as_written("an antenna 61 meters above ground") == "an antenna 61 meters above ground"
    )
