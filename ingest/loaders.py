"""File -> LoadedFile, one loader per format. A file that cannot be read raises SkipFile."""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from ingest.documents import LoadedFile, Segment, SkipFile
from ingest.ecfr import load_ecfr_xml

log = logging.getLogger(__name__)

_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


def _tidy(text: str) -> str:
    """Normalize line ends and blank-line runs; keep indentation (tables in text files)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _looks_binary(data: bytes) -> bool:
    sample = data[:4096]
    return b"\x00" in sample


def _stem_title(path: Path) -> str:
    return path.stem


# Plain text and Markdown ---------------------------------------------------------------------


def load_text(path: Path, data: bytes) -> LoadedFile:
    if _looks_binary(data):
        raise SkipFile("binary content in a text file")
    return LoadedFile(
        doc_type="text", title=_stem_title(path), segments=[Segment(_tidy(_decode(data)))]
    )


_MD_TITLE = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)


def load_markdown(path: Path, data: bytes) -> LoadedFile:
    if _looks_binary(data):
        raise SkipFile("binary content in a Markdown file")
    text = _FRONT_MATTER.sub("", _tidy(_decode(data)), count=1)
    match = _MD_TITLE.search(text)
    return LoadedFile(
        doc_type="markdown",
        title=match.group(1) if match else _stem_title(path),
        segments=[Segment(text)],
        markdown_headings=True,
    )


# HTML ----------------------------------------------------------------------------------------

_HEADING_TAGS = {f"h{level}": level for level in range(1, 7)}
_TEXT_BLOCK_TAGS = {"p", "li", "pre", "dt", "dd", "caption", "figcaption", "blockquote", "address"}
_IGNORED_TAGS = {
    "script",
    "style",
    "noscript",
    "template",
    "head",
    "svg",
    "iframe",
    "button",
    "form",
}


def _html_lines(soup) -> list[str]:
    from bs4 import NavigableString, Tag

    lines: list[str] = []
    inline: list[str] = []

    def flush_inline() -> None:
        text = _SPACES.sub(" ", " ".join(inline)).strip()
        inline.clear()
        if text:
            lines.append(text)

    def text_of(tag: Tag) -> str:
        return _SPACES.sub(" ", tag.get_text(" ", strip=True)).strip()

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if type(child) is NavigableString and child.strip():
                    inline.append(child.strip())
                continue
            if not isinstance(child, Tag) or child.name in _IGNORED_TAGS:
                continue
            name = child.name
            if name in _HEADING_TAGS:
                flush_inline()
                text = text_of(child)
                if text:
                    lines.append("#" * _HEADING_TAGS[name] + " " + text)
            elif name == "tr":
                flush_inline()
                cells = [text_of(cell) for cell in child.find_all(["td", "th"], recursive=False)]
                row = " | ".join(cell for cell in cells if cell)
                if row:
                    lines.append(row)
            elif name == "br":
                flush_inline()
            elif name in _TEXT_BLOCK_TAGS and not child.find(
                list(_HEADING_TAGS) + ["p", "table", "ul", "ol", "div"]
            ):
                flush_inline()
                text = text_of(child)
                if text:
                    lines.append(text)
            elif name in {
                "a",
                "span",
                "b",
                "i",
                "em",
                "strong",
                "code",
                "sup",
                "sub",
                "small",
                "abbr",
            }:
                text = text_of(child)
                if text:
                    inline.append(text)
            else:
                flush_inline()
                walk(child)
                flush_inline()

    walk(soup.body or soup)
    flush_inline()
    return lines


def load_html(path: Path, data: bytes) -> LoadedFile:
    # lxml's HTML parser (through BeautifulSoup) reads no DTD and expands no declared
    # entities; only the predefined HTML ones become text.
    from bs4 import BeautifulSoup

    if _looks_binary(data):
        raise SkipFile("binary content in an HTML file")
    soup = BeautifulSoup(data, "lxml")
    lines = _html_lines(soup)
    if not lines:
        raise SkipFile("HTML file has no text")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    if not title:
        first_heading = next((line for line in lines if line.startswith("#")), "")
        title = first_heading.lstrip("#").strip() or _stem_title(path)
    return LoadedFile(
        doc_type="html", title=title, segments=[Segment("\n\n".join(lines))], markdown_headings=True
    )


# DOCX ----------------------------------------------------------------------------------------

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def _docx_heading_level(paragraph) -> int | None:
    style = paragraph.style.name if paragraph.style is not None else ""
    if style.lower() == "title":
        return 1
    match = _HEADING_STYLE.match(style or "")
    return min(int(match.group(1)), 6) if match else None


# A DOCX is a zip: refuse archives that would inflate far beyond any real document before
# python-docx reads every part into memory (zipfile never inflates a member past its
# declared size, so the declared sizes are a real bound).
DOCX_MAX_UNCOMPRESSED = 256 * 1024 * 1024
DOCX_MAX_RATIO = 100  # uncompressed / compressed, over the whole archive ...
DOCX_RATIO_FLOOR = 16 * 1024 * 1024  # ... once it inflates past this (small files vary widely)
DOCX_MAX_MEMBERS = 10_000


def check_docx_archive(data: bytes) -> None:
    """Raise SkipFile for a zip bomb: too many members, too large once inflated, or a
    compression ratio no real document has."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise SkipFile(f"not a readable DOCX file (not a zip archive: {error})") from error
    if len(members) > DOCX_MAX_MEMBERS:
        raise SkipFile(
            f"DOCX archive has {len(members)} parts (limit {DOCX_MAX_MEMBERS}); not ingested"
        )
    inflated = sum(member.file_size for member in members)
    packed = sum(member.compress_size for member in members) or 1
    if inflated > DOCX_MAX_UNCOMPRESSED:
        raise SkipFile(
            f"DOCX archive inflates to {inflated / 1024 / 1024:.0f} MB (limit "
            f"{DOCX_MAX_UNCOMPRESSED // 1024 // 1024} MB): a possible zip bomb; not ingested"
        )
    if inflated > DOCX_RATIO_FLOOR and inflated / packed > DOCX_MAX_RATIO:
        raise SkipFile(
            f"DOCX archive compresses {inflated / packed:.0f}:1 (limit {DOCX_MAX_RATIO}:1): "
            "a possible zip bomb; not ingested"
        )


def load_docx(path: Path, data: bytes) -> LoadedFile:
    import docx
    from docx.table import Table

    check_docx_archive(data)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as error:  # zipfile.BadZipFile, KeyError, lxml errors...
        raise SkipFile(f"not a readable DOCX file ({type(error).__name__}: {error})") from error
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                cells: list[str] = []
                for cell in row.cells:
                    text = _SPACES.sub(" ", cell.text).strip()
                    if text and (not cells or cells[-1] != text):  # merged cells repeat
                        cells.append(text)
                if cells:
                    lines.append(" | ".join(cells))
            continue
        text = _SPACES.sub(" ", block.text).strip()
        if not text:
            continue
        level = _docx_heading_level(block)
        lines.append("#" * level + " " + text if level else text)
    if not lines:
        raise SkipFile("DOCX file has no text")
    title = (document.core_properties.title or "").strip()
    if not title:
        first_heading = next((line for line in lines if line.startswith("#")), "")
        title = first_heading.lstrip("#").strip() or _stem_title(path)
    return LoadedFile(
        doc_type="docx", title=title, segments=[Segment("\n\n".join(lines))], markdown_headings=True
    )


# PDF -----------------------------------------------------------------------------------------


def load_pdf(path: Path, data: bytes) -> LoadedFile:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed-but-readable files warn a lot
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise SkipFile("not a PDF file (no %PDF header; corrupt or mislabelled)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                # Many PDFs are encrypted only with an owner password and open with an empty one.
                reader.decrypt("")
                _ = reader.pages[0].extract_text() if reader.pages else ""
            except (FileNotDecryptedError, PdfReadError, NotImplementedError) as error:
                raise SkipFile(
                    "encrypted PDF that needs a password; save an unencrypted copy and ingest that"
                ) from error
        segments = []
        for number, page in enumerate(reader.pages, start=1):
            text = _tidy(page.extract_text() or "")
            if text:
                segments.append(Segment(text, page=number))
        title = ""
        if reader.metadata is not None and reader.metadata.title:
            title = str(reader.metadata.title).strip()
    except SkipFile:
        raise
    except FileNotDecryptedError as error:
        raise SkipFile(
            "encrypted PDF that needs a password; save an unencrypted copy and ingest that"
        ) from error
    except Exception as error:  # pypdf raises many types on broken files
        raise SkipFile(f"not a readable PDF ({type(error).__name__}: {error})") from error
    segments = _drop_running_lines(segments)
    if not segments:
        raise SkipFile("PDF has no extractable text (a scanned image? run OCR on it first)")
    return LoadedFile(doc_type="pdf", title=title or _stem_title(path), segments=segments)


_DIGITS = re.compile(r"\d+")
_EDGE_LINES = 3


def _drop_running_lines(segments: list[Segment]) -> list[Segment]:
    """Remove page headers/footers: lines near the top or bottom of most pages ("Page 3")."""
    if len(segments) < 2:
        return segments

    def edges(text: str) -> set[str]:
        lines = [line.strip() for line in text.split("\n") if line.strip()]
        return {_DIGITS.sub("#", line) for line in lines[:_EDGE_LINES] + lines[-_EDGE_LINES:]}

    counts: dict[str, int] = {}
    for segment in segments:
        for line in edges(segment.text):
            counts[line] = counts.get(line, 0) + 1
    running = {line for line, count in counts.items() if count >= max(2, (len(segments) + 1) // 2)}
    if not running:
        return segments
    cleaned = []
    for segment in segments:
        lines = segment.text.split("\n")
        nonblank = [i for i, line in enumerate(lines) if line.strip()]
        edge_indexes = set(nonblank[:_EDGE_LINES] + nonblank[-_EDGE_LINES:])
        kept = [
            line
            for i, line in enumerate(lines)
            if i not in edge_indexes or _DIGITS.sub("#", line.strip()) not in running
        ]
        text = _tidy("\n".join(kept))
        if text:
            cleaned.append(Segment(text, page=segment.page))
    return cleaned


# Dispatch ------------------------------------------------------------------------------------

Loader = Callable[[Path, bytes], LoadedFile]

LOADERS: dict[str, Loader] = {
    ".pdf": load_pdf,
    ".html": load_html,
    ".htm": load_html,
    ".xhtml": load_html,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".txt": load_text,
    ".text": load_text,
    ".docx": load_docx,
    ".xml": load_ecfr_xml,
}

# Known formats we cannot read, with what to do instead.
UNSUPPORTED_HINTS = {
    ".doc": "legacy Word .doc is not supported; save it as .docx",
    ".rtf": "RTF is not supported; save it as .docx or .txt",
    ".odt": "ODT is not supported; save it as .docx",
}


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in LOADERS


def load_file(path: Path, data: bytes) -> LoadedFile:
    """Parse `data` (the bytes of `path`) by its extension; raise SkipFile with a reason."""
    suffix = path.suffix.lower()
    loader = LOADERS.get(suffix)
    if loader is None:
        raise SkipFile(UNSUPPORTED_HINTS.get(suffix, f"unsupported file type {suffix or '(none)'}"))
    if not data.strip():
        raise SkipFile("empty file")
    try:
        loaded = loader(path, data)
    except SkipFile:
        raise
    except Exception as error:
        log.debug("loader failed on %s", path, exc_info=True)
        raise SkipFile(f"could not parse ({type(error).__name__}: {error})") from error
    loaded.segments = [segment for segment in loaded.segments if segment.text.strip()]
    if not loaded.segments:
        raise SkipFile("no text found")
    return loaded
