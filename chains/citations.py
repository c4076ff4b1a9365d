"""Citation markers in generated answers: `[1]`, `[1, 3]`, `[2-4]`, `[1][2]`.

The numbers are the ones the model saw in its numbered context, and stay as they are
(no renumbering): the answer text shows them. Markers that point at no listed source
are dropped from the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# One bracketed group of numbers, separated by commas/semicolons, with optional ranges.
MARKER = re.compile(r"\[\s*(\d+(?:\s*(?:[,;]|[-–])\s*\d+)*)\s*\]")
_MAX_RANGE = 50  # "[1-1000]" is not a citation worth expanding


def marker_numbers(group: str) -> list[int]:
    """The numbers of one marker's inside: "1, 3" -> [1, 3]; "2-4" -> [2, 3, 4]."""
    numbers: list[int] = []
    for part in re.split(r"\s*[,;]\s*", group.strip()):
        bounds = re.split(r"\s*[-–]\s*", part)
        if len(bounds) == 2:
            low, high = int(bounds[0]), int(bounds[1])
            if low <= high and high - low <= _MAX_RANGE:
                numbers.extend(range(low, high + 1))
            else:
                numbers.extend((low, high))
        else:
            numbers.extend(int(b) for b in bounds)
    return numbers


def parse_citations(answer: str | None, n_sources: int) -> list[int]:
    """Valid cited source numbers (1..n_sources), unique, in order of first mention."""
    return clean_citations(answer, n_sources).cited


@dataclass
class CitedAnswer:
    text: str  # the answer with invalid markers removed
    cited: list[int] = field(default_factory=list)  # valid numbers, in order of first mention
    dropped: list[int] = field(default_factory=list)  # numbers that pointed at no source


def clean_citations(answer: str | None, n_sources: int) -> CitedAnswer:
    """Drop markers (or the numbers inside them) that point at no listed source."""
    cited: list[int] = []
    dropped: list[int] = []

    def rewrite(match: re.Match) -> str:
        numbers = marker_numbers(match.group(1))
        valid = [n for n in dict.fromkeys(numbers) if 1 <= n <= n_sources]
        dropped.extend(n for n in numbers if not 1 <= n <= n_sources and n not in dropped)
        cited.extend(n for n in valid if n not in cited)
        if not valid:
            return ""
        if valid == numbers:
            return match.group(0)
        return "[" + ", ".join(str(n) for n in valid) + "]"

    text = MARKER.sub(rewrite, answer or "")
    if dropped:
        text = _tidy(text)
    return CitedAnswer(text=text, cited=cited, dropped=dropped)


def strip_citations(text: str) -> str:
    """The text without any citation markers (for summaries of answers, say)."""
    return _tidy(MARKER.sub("", text))


def _tidy(text: str) -> str:
    """Spaces left where a marker was removed: "word [9]." -> "word."."""
    text = re.sub(r"[ \t]+([.,;:!?)])", r"\1", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()
