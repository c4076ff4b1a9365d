"""How answers, sources and ingest reports look in the chat: text, side elements, actions."""

from __future__ import annotations

import chainlit as cl

from services.documents import document_file


def source_title(source) -> str:
    parts = [source.source]
    if source.page:
        parts.append(f"p. {source.page}")
    if source.section:
        parts.append(f"§ {source.section}")
    return " · ".join(parts)


SCORE_KINDS = {
    "dense": "dense: cosine similarity",
    "hybrid": "hybrid: reciprocal-rank fusion",
    "bm25": "keyword: BM25",
}


def source_card(source, mode: str) -> str:
    score = f"{source.score:.3f}" if source.score is not None else "n/a"
    lines = [f"**{source.source}**", ""]
    if source.page:
        lines.append(f"- Page: {source.page}")
    if source.section:
        lines.append(f"- CFR section: § {source.section}")
    if source.heading:
        lines.append(f"- Heading: {source.heading}")
    lines.append(f"- Score: {score} ({SCORE_KINDS.get(mode, mode)})")
    lines.append("- Cited in the answer" if source.cited else "- Retrieved, not cited")
    lines += ["", "---", "", source.text]
    return "\n".join(lines)


def pdf_name(source) -> str:
    return f"{source.source} (p. {source.page})"


def source_elements(sources, mode: str) -> list[cl.Element]:
    elements: list[cl.Element] = [
        cl.Text(name=f"[{s.n}]", content=source_card(s, mode), display="side") for s in sources
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
    if not sources:
        return ""
    lines = []
    for s in sources:
        # "file (p. N)" is also the name of the PDF element: it links to the page.
        title = pdf_name(s) if s.page else s.source
        if s.section:
            title += f" · § {s.section}"
        lines.append(f"[{s.n}] {title}" + ("" if s.cited else " (not cited)"))
    return "\n\n**Sources**  \n" + "  \n".join(lines)


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
