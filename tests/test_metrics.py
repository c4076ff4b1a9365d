"""Unit tests of the evaluation metrics and the text normaliser (pure functions, no models)."""

from __future__ import annotations

import pytest

from evals import metrics as m

# normalize_text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1.6 W/kg", "1.6 w/kg"),
        ("1.6 W/kg", "1.6 watts per kilogram"),
        ("1.6 W/kg", "1.6 W per kg"),
        ("20 cm", "20 centimeters"),
        ("20 cm", "20cm"),
        ("20 cm", "20 centimetres"),
        ("30 dBm", "30 DBM"),
        ("1 W", "1 watt"),
        ("5 W", "five watts"),
        ("5 µW", "5 μW"),  # micro sign vs Greek mu
        ("5 µW", "5 uW"),
        ("5 µW", "5 microwatts"),
        ("1,000 Hz", "1000 hertz"),
        ("1,000,000", "1000000"),
        ("50 percent", "50%"),
        ("50 per cent", "50 %"),
        ("0.5 mW/cm²", "0.5 mW/cm^2"),
        ("0.5 mW/cm2", "0.5 milliwatts per square centimeter"),
        ("30–88 MHz", "30-88 megahertz"),
        ("30–88 MHz", "30 to 88 MHz"),
        ("§ 15.109(a)", "section 15.109 (a)"),
        ("200 µV/m", "200 microvolts per meter"),
        (".5 W", "0.5 W"),
        ("low-power", "low power"),
        ("The limit.", "the limit"),
    ],
)
def test_normalize_text_makes_equivalent_spellings_equal(a, b):
    assert m.normalize_text(a) == m.normalize_text(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1.6 W/kg", "16 W/kg"),  # the decimal point matters
        ("15.109", "15.1091"),
        ("-13 dBm", "13 dBm"),  # a sign before a number survives
        ("1 W", "1 mW"),
        ("20 cm", "20 m"),
        ("80.1", "80.10"),  # section ids keep their digits
    ],
)
def test_normalize_text_keeps_what_changes_meaning(a, b):
    assert m.normalize_text(a) != m.normalize_text(b)


def test_normalize_text_empty_and_none():
    assert m.normalize_text("") == ""
    assert m.normalize_text(None) == ""
    assert m.normalize_text("  ...  ") == ""


def test_unit_words_change_only_after_a_number():
    assert m.normalize_text("the second harmonic") == "the second harmonic"
    assert m.normalize_text("within 2 seconds") == "within 2 s"


def test_tokens_drop_articles_and_citation_markers():
    assert m.tokens("The limit is 1.6 W/kg [1][2, 3].") == ["limit", "is", "1.6", "w/kg"]


def test_numbers_in_ignores_citation_markers():
    assert m.numbers_in("Limit 1,000 µV/m at 3 meters [2].") == {"1000", "3"}


# key facts and token F1 ----------------------------------------------------------------------


def test_key_fact_recall_counts_normalised_facts():
    answer = "Exposure must stay under 1.6 watts per kilogram, averaged over 1 gram of tissue [1]."
    assert m.key_fact_recall(answer, ["1.6 W/kg", "1 g"]) == 1.0
    assert m.key_fact_recall(answer, ["1.6 W/kg", "10 g"]) == 0.5


def test_key_fact_recall_matches_whole_tokens_only():
    assert m.key_fact_recall("The limit is 16 W/kg.", ["6 W/kg"]) == 0.0
    assert m.key_fact_recall("Section 15.1091 applies.", ["15.109"]) == 0.0


def test_key_fact_recall_edge_cases():
    assert m.key_fact_recall("anything", []) is None
    assert m.key_fact_recall("", ["1 W"]) == 0.0
    assert m.key_fact_recall(None, ["1 W"]) == 0.0


def test_token_f1():
    assert m.token_f1("The limit is 1 watt.", "the limit is 1 W") == 1.0
    assert m.token_f1("limit is 2 W", "limit is 1 W") == pytest.approx(0.75)
    assert m.token_f1("nothing shared", "limit is 1 W") == 0.0
    assert m.token_f1("", "limit") == 0.0
    assert m.token_f1("", "") == 1.0
    assert m.token_f1("answer", None) is None


def test_rouge_l():
    scores = m.rouge_l("a b c d", "a x b y d")
    assert scores["precision"] == pytest.approx(3 / 4)
    assert scores["recall"] == pytest.approx(3 / 5)
    assert scores["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert m.rouge_l("", "a b")["f1"] == 0.0
    assert m.rouge_l("a b", "")["f1"] == 0.0


def test_lcs_length():
    assert m.lcs_length("abcbdab", "bdcaba") == 4
    assert m.lcs_length([], ["a"]) == 0


# citations ---------------------------------------------------------------------------------


def test_cited_numbers_reads_single_and_grouped_markers():
    assert m.cited_numbers("A [1]. B [2, 3]. C [1][4]; D [ 5 ] E [6-8]") == [
        1,
        2,
        3,
        1,
        4,
        5,
        6,
        7,
        8,
    ]
    assert m.cited_numbers("no markers, only §15.109 and [a]") == []
    assert m.cited_numbers(None) == []


def test_citation_validity():
    assert m.citation_validity("A [1]. B [2].", n_sources=2) == 1.0
    assert m.citation_validity("A [1]. B [3].", n_sources=2) == 0.5
    assert m.citation_validity("A [0].", n_sources=2) == 0.0
    assert m.citation_validity("no citations", n_sources=2) is None
    assert m.citation_validity("A [1].", n_sources=0) == 0.0


def test_citation_precision():
    keys = [{"15.109", "a.md"}, {"15.209", "b.md"}, {"kdb.pdf"}]
    assert m.citation_precision("X [1].", keys, ["15.109"]) == 1.0
    assert m.citation_precision("X [1] [2].", keys, ["15.109"]) == 0.5
    # repeated markers count a source once; invalid markers are validity's business
    assert m.citation_precision("X [1] [1] [9].", keys, ["15.109"]) == 1.0
    assert m.citation_precision("X [3].", keys, ["kdb.pdf"]) == 1.0
    assert m.citation_precision("X [2].", keys, ["15.109(a)"]) == 0.0
    assert m.citation_precision("no citation", keys, ["15.109"]) is None
    assert m.citation_precision("X [1].", keys, []) is None


# abstention --------------------------------------------------------------------------------


def test_abstention_scores():
    records = [
        (False, True),
        (False, False),
        (True, False),
        (True, False),
        (True, True),
        (True, False),
    ]
    scores = m.abstention_scores(records)
    assert scores["abstention_accuracy"] == 0.5
    assert scores["false_abstention_rate"] == 0.25


def test_abstention_scores_without_one_kind():
    assert m.abstention_scores([(True, False)])["abstention_accuracy"] is None
    assert m.abstention_scores([(False, True)])["false_abstention_rate"] is None
    assert m.abstention_scores([]) == {"abstention_accuracy": None, "false_abstention_rate": None}


@pytest.mark.parametrize(
    ("answer", "declines"),
    [
        ("The indexed documents do not cover this question, so I cannot answer it.", True),
        ("The sources don't mention an application fee.", True),
        ("I am unable to answer from the provided context.", True),
        ("", True),
        ("  [1] ", True),
        ("The limit is 1 W [1].", False),
        ("The rule does not apply to Class A devices [2].", False),
        ("The definition does not include toys [1].", False),
        # A quoted rule saying "not covered by" is the rule's words; the answer answers.
        ('1.705 MHz [1]\n§ 15.103(h): "A device that can run from an AC adaptor is not covered '
         'by this exemption." [1]', False),
        ("§ 15.5(b): “The documents do not cover it.” [1] The documents do not cover fees.", True),
    ],
)  # fmt: skip
def test_looks_like_abstention(answer, declines):
    assert m.looks_like_abstention(answer) is declines


# groundedness ------------------------------------------------------------------------------

PASSAGES = [
    "Digital devices must meet the radiated emission limits in the table of this section.",
    "The SAR limit for the general population is 1.6 W/kg averaged over 1 gram of tissue.",
]


def test_split_sentences_keeps_decimals_and_lines():
    text = "The limit is 1.6 W/kg [2]. It applies to phones.\n- Second item here"
    assert m.split_sentences(text) == [
        "The limit is 1.6 W/kg [2].",
        "It applies to phones.",
        "Second item here",
    ]
    assert m.split_sentences("") == []


def test_groundedness_cited_and_retrieved():
    answer = (
        "The SAR limit for the general population is 1.6 W/kg [2]. "
        "Digital devices must meet the radiated emission limits. "
        "Bananas are an excellent source of potassium."
    )
    scores = m.groundedness(answer, PASSAGES)
    assert scores["sentences"] == 3
    assert scores["grounded_retrieved"] == pytest.approx(2 / 3)
    # the second sentence is supported only by source 1, which the answer does not cite
    assert scores["grounded_cited"] == pytest.approx(1 / 3)


def test_groundedness_without_citations_scores_zero_cited():
    scores = m.groundedness("The SAR limit for the general population is 1.6 W/kg.", PASSAGES)
    assert scores["grounded_cited"] == 0.0
    assert scores["grounded_retrieved"] == 1.0


def test_groundedness_threshold_and_empty_answer():
    answer = "The SAR limit is strict for bananas and apples and pears [2]."
    assert m.groundedness(answer, PASSAGES, threshold=0.9)["grounded_retrieved"] == 0.0
    assert m.groundedness("", PASSAGES)["grounded_cited"] is None
    assert m.groundedness("Yes [1].", PASSAGES)["sentences"] == 0  # too short to score


def test_support_is_rouge_l_precision():
    assert m.support("limit is 1.6 W/kg", PASSAGES[1]) == 1.0
    assert m.support("nothing in common", PASSAGES[1]) == 0.0


def test_unsupported_numbers():
    answer = "The limit is 1.6 W/kg over 10 grams, see section 15.247 [2]."
    assert m.unsupported_numbers(answer, PASSAGES) == ["10", "15.247"]
    assert m.unsupported_numbers("One watt [1].", ["1 W"]) == []
    assert m.unsupported_numbers("", PASSAGES) == []
    assert m.unsupported_numbers("Use 1,000 Hz.", []) == ["1000"]


# retrieval ---------------------------------------------------------------------------------


def test_gold_key():
    assert m.gold_key("15.109") == "15.109"
    assert m.gold_key("§ 15.109(a)(1)") == "15.109"
    assert m.gold_key("kdb_447498 (draft).pdf") == "kdb_447498 (draft).pdf"


def test_chunk_keys():
    assert m.chunk_keys("sub/kdb.pdf", None) == {"sub/kdb.pdf", "kdb.pdf"}
    assert m.chunk_keys("part15.md", "15.109") == {"part15.md", "15.109"}
    assert m.chunk_keys(None, None) == set()


def test_retrieval_scores_first_hit_at_rank_two():
    retrieved = [{"15.1", "a.md"}, {"15.109", "a.md"}, {"15.209", "a.md"}]
    scores = m.retrieval_scores(retrieved, ["15.109"], k=3)
    assert scores == {"hit@1": 0.0, "hit@k": 1.0, "recall@k": 1.0, "mrr": 0.5}


def test_retrieval_scores_respect_k():
    retrieved = [{"15.1"}, {"15.3"}, {"15.109"}]
    assert m.retrieval_scores(retrieved, ["15.109"], k=2) == {
        "hit@1": 0.0,
        "hit@k": 0.0,
        "recall@k": 0.0,
        "mrr": 0.0,
    }


def test_retrieval_scores_duplicate_hits_count_once():
    retrieved = [{"15.109"}, {"15.109"}, {"15.109"}]
    scores = m.retrieval_scores(retrieved, ["15.109", "15.209"], k=3)
    assert scores["recall@k"] == 0.5
    assert scores["mrr"] == 1.0
    # a gold id listed twice is one gold id
    assert m.retrieval_scores(retrieved, ["15.109", "15.109"], k=3)["recall@k"] == 1.0


def test_retrieval_scores_match_sources_and_file_names():
    retrieved = [m.chunk_keys("guides/kdb_447498.pdf", None), m.chunk_keys("p15.md", "15.109")]
    scores = m.retrieval_scores(retrieved, ["kdb_447498.pdf", "15.109(b)"], k=2)
    assert scores["recall@k"] == 1.0
    assert scores["hit@1"] == 1.0


def test_retrieval_scores_no_gold_and_nothing_retrieved():
    assert m.retrieval_scores([{"15.109"}], [], k=4) is None
    assert m.retrieval_scores([], ["15.109"], k=4) == {
        "hit@1": 0.0,
        "hit@k": 0.0,
        "recall@k": 0.0,
        "mrr": 0.0,
    }


# aggregation -------------------------------------------------------------------------------


def test_mean_skips_none():
    assert m.mean([1.0, None, 0.0, True]) == pytest.approx(2 / 3)
    assert m.mean([None, None]) is None
    assert m.mean([]) is None


def test_percentile_matches_linear_interpolation():
    values = [4.0, 1.0, 3.0, 2.0]
    assert m.percentile(values, 50) == 2.5
    assert m.percentile(values, 95) == pytest.approx(3.85)
    assert m.percentile(values, 0) == 1.0
    assert m.percentile([7.0], 95) == 7.0
    assert m.percentile([], 50) is None


def test_latency_summary():
    summary = m.latency_summary([1.0, None, 3.0])
    assert summary == {"p50": 2.0, "p95": pytest.approx(2.9), "mean": 2.0}


def test_a_short_answer_is_scored_without_its_pinpoint():
    from evals import metrics

    passage = "For digitally modulated systems, the power spectral density may not exceed 8 dBm."
    answer = f'8 dBm (§ 15.247(e)) [1]\n§ 15.247(e): "{passage}" [1]'
    labels = ["§ 15.247(e)"]
    claims = metrics.without_pinpoints(answer, labels)
    assert claims.splitlines()[0] == "8 dBm [1]"
    assert metrics.cited_support(claims, [passage], "", labels)["supported_sentence_rate"] == 1
    # Scored with the pinpoint, the short line read as a sentence its passage does not back.
    assert metrics.cited_support(answer, [passage], "", labels)["supported_sentence_rate"] < 1
