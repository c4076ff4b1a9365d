"""How answers, sources and ingest reports look in the chat: text, side elements, actions."""

from __future__ import annotations

import chainlit as cl

from services.documents import as_of_dates, document_file

ECFR_NOTE = "not an official legal edition"


def source_title(source) -> str:
    """`part97.txt · § 97.313(b)`; a PDF passage: `kdb.pdf · p. 3`."""
    parts = [source.source]
    if source.page:
        parts.append(f"p. {source.page}")
    pinpoint = getattr(source, "pinpoint", None)
    if pinpoint and pinpoint.startswith("§"):
        parts.append(pinpoint)
    elif source.section:
        parts.append(f"§ {source.section}")
    return " · ".join(parts)


def highlighted(context: str, span: list[int] | None) -> str:
    """The chunk with the quoted passage in bold, so the [n] shows where its words stand."""
    if not span or not context:
        return context or ""
    start, end = span
    quoted = context[start:end].strip()
    if not quoted:
        return context
    # Bold per line: Markdown emphasis does not cross line breaks.
    marked = "\n".join(
        f"**{line.strip()}**" if line.strip() else line for line in quoted.split("\n")
    )
    return f"{context[:start]}{marked}{context[end:]}"


SCORE_KINDS = {
    "dense": "dense: cosine similarity",
    "hybrid": "hybrid: reciprocal-rank fusion",
    "bm25": "keyword: BM25",
}


def _dates(sources) -> dict[str, str]:
    try:
        return as_of_dates(s.source for s in sources)
    except Exception:  # the store is down: the sources still render, without dates
        return {}


def source_card(
    source,
    mode: str,
    score_note: str | None = None,
    cited_in: str = "answer",
    as_of: str | None = None,
) -> str:
    """One side panel per [n]: where the passage is, its text's date (eCFR), the passage
    quoted, then its chunk with the quoted words in bold. `score_note` says what the score
    measures (default: the question against the passage, and the retrieval mode)."""
    score = f"{source.score:.3f}" if source.score is not None else "n/a"
    pinpoint = getattr(source, "pinpoint", None)
    lines = [f"**[{source.n}] {pinpoint or source_title(source)}**", ""]
    lines.append(f"- File: {source.source}")
    if as_of:
        lines.append(f"- Text: eCFR as of {as_of} ({ECFR_NOTE})")
    if source.page:
        lines.append(f"- Page: {source.page}")
    if source.heading:
        lines.append(f"- Heading: {source.heading}")
    note = score_note or f"question vs passage; retrieval: {SCORE_KINDS.get(mode, mode)}"
    lines.append(f"- Passage score: {score} ({note})")
    lines.append(f"- Cited in the {cited_in}" if source.cited else "- Retrieved, not cited")
    lines += ["", "> " + source.text.replace("\n", "\n> ")]
    context = getattr(source, "context", None)
    if context:
        lines += [
            "",
            "---",
            "",
            "In context:",
            "",
            highlighted(context, getattr(source, "span", None)),
        ]
    return "\n".join(lines)


def pdf_name(source) -> str:
    return f"{source.source} (p. {source.page})"


def source_elements(
    sources, mode: str, score_note: str | None = None, cited_in: str = "answer"
) -> list[cl.Element]:
    dates = _dates(sources)
    elements: list[cl.Element] = [
        cl.Text(
            name=f"[{s.n}]",
            content=source_card(s, mode, score_note, cited_in, dates.get(s.source)),
            display="side",
        )
        for s in sources
    ]
    seen: set[str] = set()
    for s in sources:
        if not s.source.lower().endswith(".pdf") or not s.page or pdf_name(s) in seen:
            continue
        path = document_file(s.source)
        if path is not None:
            seen.add(pdf_name(s))
            elements.append(cl.Pdf(name=pdf_name(s), path=str(path), page=s.page, display="side"))
    return elements


def sources_footer(sources) -> str:
    """The numbered sources under an answer; where they quote eCFR text, its date once."""
    if not sources:
        return ""
    dates = sorted(set(_dates(sources).values()))
    header = "**Sources**"
    if dates:
        header += f" (eCFR as of {' and '.join(dates)}; {ECFR_NOTE})"
    lines = []
    for s in sources:
        # "file (p. N)" is also the name of the PDF element: it links to the page.
        title = pdf_name(s) if s.page else s.source
        pinpoint = getattr(s, "pinpoint", None)
        if pinpoint and pinpoint.startswith("§"):
            title += f" · {pinpoint}"
        elif s.section:
            title += f" · § {s.section}"
        lines.append(f"[{s.n}] {title}" + ("" if s.cited else " (not cited)"))
    return f"\n\n{header}  \n" + "  \n".join(lines)


def answer_actions(message_id: str, sources) -> list[cl.Action]:
    if not sources:
        return []
    actions = [
        cl.Action(
            name="summarize_sources",
            payload={"message_id": message_id},
            label="Summarize sources",
            icon="list",
        )
    ]
    for name in dict.fromkeys(s.source for s in sources):
        actions.append(
            cl.Action(
                name="show_document",
                payload={"source": name},
                label=f"Show full document: {name}",
                icon="file-text",
            )
        )
    return actions


def describe_report(report) -> str:
    if report.skipped:
        return "skipped: " + "; ".join(item["reason"] for item in report.skipped)
    if report.files_unchanged and not report.chunks_written:
        return "already indexed, unchanged"
    chunks = report.chunks_written
    return f"{chunks} chunk{'s' if chunks != 1 else ''} indexed in {report.seconds:.2f} s"


# Actions -----------------------------------------------------------------------------------


def retrieval_summary(sources, searched: dict | None = None) -> str:
    """The retrieval step's output: the passages the model saw, or what was searched."""
    if sources:
        return "\n".join(
            f"[{s.n}] {source_title(s)} — score {s.score:.3f}"
            if s.score is not None
            else f"[{s.n}] {source_title(s)}"
            for s in sources
        )
    searched = searched or {}
    lines = [f"Nothing relevant enough (searched {searched.get('chunks', 0)} chunks)."]
    for key, label in (
        ("missing_references", "Not in the documents"),
        ("absent_terms", "Never mentioned"),
    ):
        if searched.get(key):
            lines.append(f"{label}: {', '.join(searched[key])}")
    for closest in searched.get("closest") or []:
        lines.append(f"Closest: {closest['pinpoint']} ({closest['score']:.2f})")
    return "\n".join(lines)


def verification_summary(result) -> str | None:
    """What the verifier removed from the model's draft (the chat never shows it as answer)."""
    dropped = getattr(result, "dropped", None) or []
    if not dropped:
        return None
    lines = [f"{len(dropped)} draft sentence(s) not shown, no passage supports them:"]
    lines += [f"- {d['text'][:200]} ({d['reason']})" for d in dropped[:8]]
    if getattr(result, "fallback", False):
        lines.append("The answer quotes the best passage instead.")
    return "\n".join(lines)


# Summaries ---------------------------------------------------------------------------------

SUMMARY_SCORE_NOTE = "how much the passage reads as a rule: a limit, duty, prohibition, deadline"


def summary_message(summary) -> str:
    """The chat's "Summarize sources" reply: the cited lines, then its numbered sources."""
    body = summary.summary or "Nothing in these sources to summarize."
    if summary.mode == "raw":
        body += "\n\n_(raw mode: the model's text, unverified and uncited)_"
    return f"**Summary of the sources**\n\n{body}" + sources_footer(summary.source_records())


def summary_elements(summary) -> list[cl.Element]:
    """The summary's cited passages as side elements, like an answer's [n]."""
    return source_elements(
        summary.source_records(), "hybrid", SUMMARY_SCORE_NOTE, cited_in="summary"
    )


def summary_verification(summary) -> str:
    """The summarize step's output: what was quoted, condensed and dropped, and the cost."""
    kinds = [s.get("kind") for s in summary.sentences]
    lines = [
        f"{kinds.count('quote')} provision(s) quoted, {kinds.count('model')} condensed by the "
        f"model and verified; {summary.calls} model call(s), {summary.seconds:.1f} s."
    ]
    if summary.dropped:
        lines.append(f"{len(summary.dropped)} model sentence(s) not shown:")
        lines += [f"- {d['text'][:200]} ({d['reason']})" for d in summary.dropped[:8]]
    return "\n".join(lines)
