"""Every prompt the chains send, in one place.

`build_rag_messages` is THE prompt format of a RAG answer: numbered evidence passages
(each with its pinpoint, e.g. `[1] (97.215.txt, § 97.215(c)) The transmitter power must not
exceed 1 W.`), then the question. The chain uses it, and `finetune data from-corpus` imports
it so an adapter trains on exactly what it will see. Change it here and retrain. The layout
is tuned for small models: one worked example of the citation format, the numbered
passages before the question, the instruction repeated after the question.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

NO_ANSWER = (
    "The indexed documents do not cover this question, so I cannot answer it from them. "
    "Try rephrasing it, or add documents that cover it."
)


# The first line of a quoted answer whose best passage is a weak match (PASSAGE_CONFIDENT):
# not a claim, a warning that the quotes may be about a neighbouring rule.
WEAK_MATCH_NOTE = "The documents may not answer this directly; the closest passages say:"


def no_answer(searched: Mapping[str, Any] | None = None) -> str:
    """The abstention, saying what was searched (so the user can tell a gap from a miss)."""
    if not searched:
        return NO_ANSWER
    text = f"{NO_ANSWER}\n\nSearched {searched.get('chunks', 0)} chunks"
    if searched.get("collection"):
        text += f" of the collection {searched['collection']!r}"
    text += f" ({searched.get('mode', 'hybrid')} retrieval) for: {searched.get('query', '')!r}."
    if searched.get("missing_references"):
        text += " The indexed documents do not include " + ", ".join(searched["missing_references"])
        text += "."
    if searched.get("absent_terms"):
        text += " None of the indexed documents mentions " + ", ".join(
            repr(term) for term in searched["absent_terms"]
        )
        text += "."
    if searched.get("uncovered_subject"):
        words = ", ".join(repr(word) for word in searched["uncovered_subject"])
        text += f" The closest rules are not about it: their sections never mention {words}."
    closest = searched.get("closest") or []
    if closest:
        why = (
            "not about it" if searched.get("uncovered_subject") else "below the relevance threshold"
        )
        text += f" Closest passages, {why}: " + "; ".join(
            f"{c['pinpoint']} ({c['score']:.2f})" for c in closest
        )
        text += "."
    return text


RAG_SYSTEM = (
    "You answer questions about FCC regulations using only the numbered sources you are given. "
    "After each fact, cite its source number in square brackets, like [1]. "
    "If the sources do not contain the answer, say that the documents do not cover it."
)

_EXAMPLE_SOURCES = [
    {
        "n": 1,
        "source": "example.txt",
        "section": "1.1",
        "pinpoint": "§ 1.1(a)",
        "text": "Visitors must sign in at the front desk.",
    },
    {
        "n": 2,
        "source": "example.txt",
        "section": "1.2",
        "pinpoint": "§ 1.2(b)",
        "text": "The office is open from 9 a.m. to 5 p.m. on weekdays.",
    },
]
_EXAMPLE_QUESTION = "When is the office open?"
_EXAMPLE_ANSWER = "The office is open from 9 a.m. to 5 p.m. on weekdays [2]."
_ANSWER_INSTRUCTION = "Answer briefly from the sources above and cite the source number like [1]."

# Stop strings for a RAG answer: the model starting a new prompt-like block instead of ending,
# or a blank line: a short cited answer is one paragraph, and what a 135M model writes after
# it is a loop (measured: bench/results/answers.md).
RAG_STOP = ["\nSources:", "\nQuestion:", "\n\n"]


def _get(source: Any, key: str, default: Any = None) -> Any:
    if isinstance(source, Mapping):
        return source.get(key, default)
    return getattr(source, key, default)


def source_header(
    n: int,
    source: str | None,
    page: int | None = None,
    section: str | None = None,
    pinpoint: str | None = None,
) -> str:
    """`[1] (kdb_447498.pdf, p. 3, § 15.109(a))`; absent parts are left out.

    A pinpoint ("§ 97.313(b)") replaces the bare section; one that already names the file
    and page (a PDF passage: "kdb_447498.pdf, p. 3") replaces those too.
    """
    parts = [source or "unknown source"]
    if pinpoint and not pinpoint.startswith("§"):
        parts = [pinpoint]
    elif page is not None:
        parts.append(f"p. {page}")
    if pinpoint and pinpoint.startswith("§"):
        parts.append(pinpoint)
    elif section and not pinpoint:
        parts.append(f"§ {section}")
    return f"[{n}] ({', '.join(parts)})"


def format_source(source: Any, n: int | None = None) -> str:
    """One numbered context entry; `source` has n, source, page, section, text and optionally
    pinpoint (object or dict)."""
    number = n if n is not None else _get(source, "n")
    header = source_header(
        number,
        _get(source, "source"),
        _get(source, "page"),
        _get(source, "section"),
        _get(source, "pinpoint"),
    )
    return f"{header} {' '.join(str(_get(source, 'text', '')).split())}"


def format_context(sources: Sequence[Any]) -> str:
    return "\n\n".join(format_source(s, n=_get(s, "n") or i) for i, s in enumerate(sources, 1))


def rag_user_message(question: str, sources: Sequence[Any]) -> str:
    context = format_context(sources) if sources else "(no sources)"
    return f"Sources:\n{context}\n\nQuestion: {question.strip()}\n{_ANSWER_INSTRUCTION}"


def build_rag_messages(
    question: str, sources: Sequence[Any], instructions: str | None = None
) -> list[dict[str, str]]:
    """The chat messages of a RAG answer: system rule, one worked example, sources + question.

    `sources` are numbered context entries (chains.rag.Source, RetrievedChunk-like objects
    or dicts with n, source, page, section, text); without `n` they are numbered 1, 2, ...
    `instructions` (a caller's system message) go before the system rule, which stays.
    """
    system = f"{instructions.strip()}\n\n{RAG_SYSTEM}" if instructions else RAG_SYSTEM
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": rag_user_message(_EXAMPLE_QUESTION, _EXAMPLE_SOURCES)},
        {"role": "assistant", "content": _EXAMPLE_ANSWER},
        {"role": "user", "content": rag_user_message(question, sources)},
    ]


# Follow-up questions ----------------------------------------------------------------------

CONDENSE_SYSTEM = (
    "Rewrite the follow-up question as one standalone question that names everything it refers "
    "to from the conversation. Reply with the question only."
)


def build_condense_messages(
    question: str, history: Sequence[tuple[str, str]]
) -> list[dict[str, str]]:
    turns = "\n".join(
        f"User: {user.strip()}\nAssistant: {_clip(answer, 60)}" for user, answer in history
    )
    return [
        {"role": "system", "content": CONDENSE_SYSTEM},
        {
            "role": "user",
            "content": f"Conversation:\n{turns}\n\nFollow-up question: {question.strip()}\n"
            "Standalone question:",
        },
    ]


def _clip(text: str, words: int) -> str:
    parts = (text or "").split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


# Summaries --------------------------------------------------------------------------------

SUMMARY_SYSTEM = (
    "You summarize regulatory text accurately and briefly. Keep section numbers, limits and values."
)


def build_summary_messages(text: str, focus: str | None = None) -> list[dict[str, str]]:
    """Map step: summarize one piece of text (optionally with regard to a question)."""
    ask = (
        f"Summarize the text below with regard to: {focus.strip()}"
        if focus
        else "Summarize the text below."
    )
    return [
        {"role": "system", "content": SUMMARY_SYSTEM},
        {"role": "user", "content": f"{ask}\n\nText:\n{text.strip()}\n\nSummary:"},
    ]


def build_combine_messages(
    summaries: Sequence[str], focus: str | None = None
) -> list[dict[str, str]]:
    """Reduce step: merge partial summaries into one."""
    parts = "\n\n".join(f"Part {i}: {s.strip()}" for i, s in enumerate(summaries, 1))
    ask = "Combine these partial summaries of one document into a single short summary"
    ask += f" with regard to: {focus.strip()}" if focus else "."
    return [
        {"role": "system", "content": SUMMARY_SYSTEM},
        {"role": "user", "content": f"{ask}\n\n{parts}\n\nSummary:"},
    ]


# Condensing the provisions a verified summary quotes --------------------------------------

SHORTEN_SYSTEM = (
    "You shorten rules from FCC regulations without changing them. Keep every number and "
    "unit, and words such as must, may, not, only and except, exactly as written."
)


def build_condense_messages_for_provisions(sources: Sequence[Any]) -> list[dict[str, str]]:
    """A verified summary's condensing step: each numbered provision (n, text) shortened to
    one sentence that ends with its [n]; `chains.verify` checks every sentence after."""
    rules = "\n".join(
        f"[{_get(s, 'n')}] {' '.join(str(_get(s, 'text', '')).split())}" for s in sources
    )
    return [
        {"role": "system", "content": SHORTEN_SYSTEM},
        {
            "role": "user",
            "content": "Shorten each rule to one sentence that ends with its number, like [1]."
            f"\n\n{rules}\n\nShortened rules:",
        },
    ]
