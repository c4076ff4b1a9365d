"""eCFR XML: every `DIV8` section (and `DIV9` appendix) becomes one segment.

Works on a whole eCFR download (`DIV5` part > `DIV6` subpart > [`DIV7` subject group] >
`DIV8` section) and on a single `DIV8` fragment. Block elements become paragraphs and table
rows become `cell | cell` lines, like the text rendering of the shared FCC corpus.

The point-in-time date (`LoadedFile.as_of`) comes from the file's eCFR path
(`/on/2024-11-14/title-47/...`) where it holds a date, else from a `SOURCES.md` in the file's
folder or the two above it, on a line naming the "point-in-time date" (data/corpus/ecfr/).
eCFR downloads often carry the placeholder `_SUBSTITUTE_DATE_` instead: no date is guessed.
"""

from __future__ import annotations

import re
from pathlib import Path

from lxml import etree

from ingest.documents import LoadedFile, Segment, SkipFile

_SECTION_TAG = "DIV8"
_APPENDIX_TAG = "DIV9"
# Elements whose text is one paragraph (their inline children, e.g. <I>, <E>, <SU>, are kept).
_PARAGRAPH_TAGS = {"HEAD", "P", "FP", "CITA", "HED", "PSPACE", "CAPTION", "HD1", "HD2", "HD3"}
_SKIP_TAGS = {"FTREF"}
_SPACES = re.compile(r"\s+")
_PART_IN_NAME = re.compile(r"\bpart\s+(\d+)\b", re.IGNORECASE)
_DATE_IN_PATH = re.compile(rb"/on/(\d{4}-\d{2}-\d{2})/")
_DATE_IN_SOURCES = re.compile(r"point-in-time date\W*(\d{4}-\d{2}-\d{2})", re.IGNORECASE)
SOURCES_NOTE = "SOURCES.md"  # provenance beside a corpus (never indexed: ingest.pipeline)
_SOURCES_LEVELS = 3  # the file's folder and the two above it


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _inline_text(element: etree._Element) -> str:
    parts: list[str] = []

    def walk(node: etree._Element) -> None:
        if node.tag == "br":
            parts.append(" ")
        elif isinstance(node.tag, str) and node.tag not in _SKIP_TAGS and node.text:
            parts.append(node.text)
        for child in node:
            walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(element)
    return _clean("".join(parts))


def _is_paragraph(tag: str) -> bool:
    return tag in _PARAGRAPH_TAGS or tag.startswith(("FP", "HD"))


def _render(element: etree._Element, lines: list[str]) -> None:
    """Append one line per paragraph or table row of `element`'s content."""
    for child in element:
        if not isinstance(child.tag, str):  # comments, processing instructions
            continue
        tag = child.tag
        if tag in _SKIP_TAGS:
            continue
        if tag == "TR":
            cells = [_inline_text(cell) for cell in child if isinstance(cell.tag, str)]
            row = " | ".join(cell for cell in cells if cell)
            if row:
                lines.append(row)
        elif _is_paragraph(tag):
            text = _inline_text(child)
            if text:
                lines.append(text)
        else:
            _render(child, lines)
            if child.tail and child.tail.strip():
                lines.append(_clean(child.tail))


def _head(element: etree._Element) -> str | None:
    head = element.find("HEAD")
    return _inline_text(head) if head is not None else None


def _ancestor(element: etree._Element, tag: str) -> etree._Element | None:
    for parent in element.iterancestors(tag):
        return parent
    return None


def _part_of(element: etree._Element, name: str) -> str | None:
    part_div = _ancestor(element, "DIV5")
    if part_div is not None and part_div.get("N"):
        return part_div.get("N")
    if element.tag == _SECTION_TAG and "." in name:
        return name.split(".", 1)[0]
    match = _PART_IN_NAME.search(name)
    return match.group(1) if match else None


def _parser() -> etree.XMLParser:
    """For untrusted files: no entity is expanded (internal or external: no billion laughs,
    no XXE), no DTD or network is read, and libxml2's size and depth limits stay on (no
    huge_tree). eCFR downloads declare no entities and fit those limits."""
    return etree.XMLParser(
        recover=False,
        huge_tree=False,
        resolve_entities=False,
        load_dtd=False,
        no_network=True,
        dtd_validation=False,
    )


def _parse(data: bytes) -> etree._Element:
    parser = _parser()
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        # Fragments copied out of a download can hold several top-level elements.
        if "Extra content" not in str(error):
            raise SkipFile(f"not well-formed XML ({error})") from error
        body = re.sub(rb"^\s*<\?xml[^>]*\?>", b"", data)
        try:
            return etree.fromstring(b"<ROOT>" + body + b"</ROOT>", parser)
        except etree.XMLSyntaxError as second:
            raise SkipFile(f"not well-formed XML ({second})") from second


def _date_in_sources(folder: Path) -> str | None:
    note = folder / SOURCES_NOTE
    try:
        match = _DATE_IN_SOURCES.search(note.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return match.group(1) if match else None


def point_in_time(path: Path, data: bytes) -> str | None:
    """The eCFR point-in-time date of this file, or None where nothing states it."""
    match = _DATE_IN_PATH.search(data)
    if match:
        return match.group(1).decode()
    for folder in list(path.resolve().parents)[:_SOURCES_LEVELS]:
        found = _date_in_sources(folder)
        if found:
            return found
    return None


def load_ecfr_xml(path: Path, data: bytes) -> LoadedFile:
    root = _parse(data)
    divisions = [
        node
        for node in root.iter(_SECTION_TAG, _APPENDIX_TAG)
        if node.get("TYPE") in {"SECTION", "APPENDIX"}
    ]
    if not divisions:
        raise SkipFile("XML file is not an eCFR download (no DIV8 section elements)")
    segments = []
    for division in divisions:
        name = division.get("N", "")
        lines: list[str] = []
        _render(division, lines)
        if not lines:
            continue
        subpart_div = _ancestor(division, "DIV6")
        is_section = division.tag == _SECTION_TAG
        segments.append(
            Segment(
                text="\n\n".join(lines),
                section=name if is_section and name else None,
                heading=_head(division) or name or None,
                part=_part_of(division, name),
                subpart=subpart_div.get("N") if subpart_div is not None else None,
                structured=True,
            )
        )
    if not segments:
        raise SkipFile("eCFR XML file has only empty sections")
    part_div = root if root.tag == "DIV5" else next(root.iter("DIV5"), None)
    if part_div is not None:
        title = _head(part_div) or path.stem
    elif len(segments) == 1:
        title = segments[0].heading or path.stem
    else:
        title = path.stem
    return LoadedFile(
        doc_type="ecfr_xml", title=title, segments=segments, as_of=point_in_time(path, data)
    )
