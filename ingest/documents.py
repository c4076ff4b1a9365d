"""What a loader hands to the chunker: a file's text in segments with their place in the file."""

from __future__ import annotations

from dataclasses import dataclass, field


class SkipFile(Exception):
    """This file cannot be ingested; the message is the one-line reason shown to the user."""


@dataclass
class Segment:
    """A PDF page, an eCFR section, or a whole text file.

    `section`/`heading`/`part`/`subpart` are set only where the format states them (eCFR
    XML); otherwise the chunker finds section headings in the text itself.
    """

    text: str
    page: int | None = None
    section: str | None = None
    heading: str | None = None
    part: str | None = None
    subpart: str | None = None
    structured: bool = False  # True: the metadata above is authoritative for the whole segment


@dataclass
class LoadedFile:
    doc_type: str  # pdf | html | markdown | text | docx | ecfr_xml
    title: str
    segments: list[Segment] = field(default_factory=list)
    markdown_headings: bool = False  # lines starting with '#' are headings (md, html, docx)
    # The text's point-in-time date ("2024-11-14") where the source states one (eCFR XML:
    # its download path, or the SOURCES.md beside it); every chunk records it.
    as_of: str | None = None
