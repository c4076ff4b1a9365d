"""What the chat opens on: a welcome line saying what is indexed (documents, chunks, the CFR
parts and their eCFR date where the documents state them, model, adapter) and starter
questions.

Starters: a corpus may ship its own (`starters.json` in the corpus folder or a folder of it,
e.g. data/corpus/ecfr/starters.json: questions checked to answer well), shown while the
sections they ask about are indexed; otherwise they are drawn from the indexed documents'
section headings. Cheap by design (Chainlit asks for both on every page load): no model
call, one count of the collection, and the rest read again only when that count changes.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core.models import DEFAULT_LLM_NAME
from services import conversation, documents

log = logging.getLogger(__name__)

MAX_STARTERS = 4
STARTERS_FILE = "starters.json"
MAX_TOPIC_CHARS = 48
# Documents read for headings (their first chunks only matter; a big corpus is sampled).
MAX_DOCUMENTS_READ = 12
CACHE_SECONDS = 300.0
# Sections whose heading makes a poor question ("What does § 15.1 (Scope of this part) say?").
_DULL = re.compile(r"\b(scope|purpose|definitions?|basis|applicability|reserved)\b", re.I)
_SECTION_PREFIX = re.compile(r"^\s*§+\s*[\d.]+[a-z]?\s*")


@dataclass(frozen=True)
class Starter:
    label: str  # what the button shows
    message: str  # the question it sends


@dataclass(frozen=True)
class Corpus:
    documents: int
    chunks: int
    starters: tuple[Starter, ...]
    # The eCFR documents among them: their CFR parts and point-in-time dates (as ingested).
    ecfr_documents: int = 0
    parts: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()


_cache: dict[str, tuple[float, int, Corpus]] = {}
_lock = threading.Lock()


def _chunk_count() -> int:
    try:
        return conversation.assistant().retriever().count()
    except Exception:  # the store is down: the welcome still renders
        return 0


def corpus() -> Corpus:
    """The indexed documents' count, chunk count and starters (cached on the chunk count)."""
    collection = conversation.assistant().settings.collection_name
    count = _chunk_count()
    with _lock:
        cached = _cache.get(collection)
        if cached and cached[1] == count and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[2]
    try:
        listed = documents.list_documents() if count else []
    except Exception:
        listed = []
    ecfr = [e for e in listed if e.get("doc_type") == "ecfr_xml"]
    result = Corpus(
        len(listed),
        count,
        tuple(shipped_starters(listed) or starters_from(listed)),
        ecfr_documents=len(ecfr),
        parts=tuple(sorted({e["part"] for e in ecfr if e.get("part")}, key=_part_key)),
        dates=tuple(sorted({e["as_of"] for e in ecfr if e.get("as_of")})),
    )
    with _lock:
        _cache[collection] = (time.monotonic(), count, result)
    return result


def _part_key(part: str) -> tuple[int, str]:
    return (int(part), part) if part.isdigit() else (10**6, part)


def _corpus_root() -> Path:
    return Path(conversation.assistant().settings.corpus_path)


def shipped_starters(listed: list[dict], limit: int = MAX_STARTERS) -> list[Starter]:
    """The corpus's own starters (`starters.json`: [{"label", "message", "source"}], `source`
    relative to the file's folder) whose source is indexed from the corpus folder."""
    root = _corpus_root()
    indexed = {
        e["source"]
        for e in listed
        if e.get("source") and (not e.get("root") or Path(e["root"]) == root.resolve())
    }
    found: list[Starter] = []
    for path in sorted([*root.glob(STARTERS_FILE), *root.glob(f"*/{STARTERS_FILE}")]):
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
            folder = path.parent.relative_to(root).as_posix()
            for entry in entries:
                source = entry["source"] if folder == "." else f"{folder}/{entry['source']}"
                if source in indexed:
                    found.append(Starter(entry["label"], entry["message"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("Ignoring %s: %s", path, error)
    return found[:limit]


def _topic(heading: str) -> str:
    return _SECTION_PREFIX.sub("", heading).strip().rstrip(".").strip()


def _short(text: str, limit: int = MAX_TOPIC_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:—-") + "…"


def starter_for(chunks: list[dict]) -> Starter | None:
    """A question about the document's first CFR section with a telling heading."""
    for chunk in chunks:
        section, heading = chunk.get("section"), chunk.get("heading") or ""
        topic = _topic(heading)
        if not section or not topic or _DULL.search(topic):
            continue
        # The heading goes into the question too: it is what retrieval matches best (measured
        # on the sample corpus: "What does § 15.5 say?" alone finds no passage above the
        # relevance threshold, with its heading it does).
        return Starter(f"§ {section} {_short(topic)}", f"What does § {section} ({topic}) say?")
    return None


def _spread(items: list, count: int) -> list:
    """`count` items spread evenly over the list (all of it when shorter)."""
    if len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def starters_from(listed: list[dict], limit: int = MAX_STARTERS) -> list[Starter]:
    """Starters from documents spread over the list, one per document: a CFR section of it,
    or (no document has one) its title."""
    found: list[Starter] = []
    for entry in _spread(listed, MAX_DOCUMENTS_READ):
        try:
            chunks = documents.document_chunks(entry["source"])
        except Exception:
            continue
        starter = starter_for(chunks)
        if starter and starter.label not in {s.label for s in found}:
            found.append(starter)
    if not found:
        titles = [e.get("title") or Path(e["source"]).stem for e in listed if e.get("source")]
        found = [Starter(_short(t), f"What does {t} cover?") for t in dict.fromkeys(titles)]
    return _spread(found, limit)


def model_and_adapter() -> tuple[str, str | None]:
    """The served model and adapter names (the ones it will load with, before warm-up ends)."""
    a = conversation.assistant()
    status = a.status()
    if status.get("loaded"):
        return str(status.get("model_name") or DEFAULT_LLM_NAME), status.get("adapter")
    base, adapter = a.settings.local_base_model_path.strip(), a.settings.local_adapter_path
    return Path(base).name if base else DEFAULT_LLM_NAME, Path(adapter).name if adapter else None


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def ecfr_line(indexed: Corpus) -> str:
    """`47 CFR Parts 80 and 97 (eCFR, 2024-11-14)`, then how many other documents."""
    parts = list(indexed.parts)
    named = f"47 CFR Part{'s' if len(parts) > 1 else ''} {_and(parts)}" if parts else "47 CFR text"
    when = _and(list(indexed.dates)) if indexed.dates else "date not stated"
    line = f"**{named}** (eCFR, {when})"
    others = indexed.documents - indexed.ecfr_documents
    if others > 0:
        line += f" and {_plural(others, 'other document')}"
    return line


def welcome_markdown(name: str) -> str:
    """The welcome: the product's name, what is indexed, what the answers are."""
    indexed = corpus()
    model, adapter = model_and_adapter()
    if indexed.chunks:
        what = (
            f"**{_plural(indexed.documents, 'document')}** indexed "
            f"({_plural(indexed.chunks, 'chunk')})"
        )
        if indexed.ecfr_documents:
            what += f": {ecfr_line(indexed)}"
    else:
        what = "**No documents indexed yet**: drop PDF, HTML, Markdown, DOCX or eCFR XML files here"
    served = f"model **{model}**, adapter **{adapter or 'none'}**"
    return (
        f"### {name}\n\n"
        f"{what} · {served}.\n\n"
        "Answers quote only the indexed documents and cite them as [1], [2], …"
        + (" The eCFR is not an official legal edition of the CFR." if indexed.dates else "")
    )
