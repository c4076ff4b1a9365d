"""Citation parsing and clean-up (no model)."""

from __future__ import annotations

import pytest

from chains.citations import clean_citations, marker_numbers, parse_citations, strip_citations


@pytest.mark.parametrize(
    ("answer", "n", "expected"),
    [
        ("Power is limited to 1.5 kW [1].", 3, [1]),
        ("See [1, 3] and [2].", 3, [1, 3, 2]),
        ("Both apply [1][2].", 2, [1, 2]),
        ("Out of range [12] is dropped [2].", 3, [2]),
        ("Repeated [2] and [2, 1].", 3, [2, 1]),
        ("A range [2-4].", 4, [2, 3, 4]),
        ("An en dash range [1–2].", 2, [1, 2]),
        ("Semicolons [1; 2].", 2, [1, 2]),
        ("Spaces inside [ 3 ].", 3, [3]),
        ("Zero is no source [0].", 3, []),
        ("No markers at all.", 3, []),
        ("Not a citation: § 15.109(a) or [a] or [see 1].", 3, []),
        ("", 3, []),
        (None, 3, []),
        ("Nothing to cite from [1].", 0, []),
    ],
)
def test_parse_citations(answer, n, expected):
    assert parse_citations(answer, n) == expected


def test_invalid_markers_are_removed_from_the_text():
    cleaned = clean_citations("Power is 1.5 kW [1]. Mobile units [7] need a license [2, 9].", 3)
    assert cleaned.text == "Power is 1.5 kW [1]. Mobile units need a license [2]."
    assert cleaned.cited == [1, 2]
    assert cleaned.dropped == [7, 9]


def test_valid_text_is_left_untouched():
    answer = "First [1][2], then  spaced   text [1, 2]."
    cleaned = clean_citations(answer, 2)
    assert cleaned.text == answer
    assert cleaned.dropped == []


def test_marker_numbers():
    assert marker_numbers("1, 3") == [1, 3]
    assert marker_numbers("2-4") == [2, 3, 4]
    assert marker_numbers("5-2") == [5, 2]  # not a range; both numbers are checked
    assert marker_numbers("1-900") == [1, 900]  # absurd ranges are not expanded


def test_strip_citations():
    assert strip_citations("A rule [1]. Another [2, 3].") == "A rule. Another."
