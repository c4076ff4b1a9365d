"""Query expansion: the words users say, mapped to the words the rules use.

Users ask about a "walkie-talkie", a "boat radio", a "kid", "calling for help" or "ham"
radio; the rules say "hand-held portable transmitter", "ship station", "years of age",
"distress" and "amateur". Two sources add the rules' terms to a query:

- `Glossary`: `data/glossary.tsv`, lay terms and abbreviations (ham, rig, walkie-talkie,
  boat, ERP, EIRP, PEP, DSC, GMDSS, EPIRB, ...) written by hand for this project.
- `CorpusDefinitions`: the indexed collection's own definitions sections (chunks whose
  heading says "Definitions": § 97.3, § 80.5, § 15.3, ...), read at query time. A query close
  to a definition's sentence ("a portable VHF transmitter for use in the vicinity of the ship
  station") pulls in the defined term ("Associated ship unit"); an abbreviation the query
  uses ("DSC") pulls in the term it stands for ("Digital selective calling").

A glossary term is expanded only where the collection seldom uses it itself (in fewer than
1 chunk in 100): "SAR" needs no expansion in RF-exposure guidance that says "SAR".
`QueryExpander.expand` returns an `Expansion` (the added terms and where each came from);
`chains.retrieval.Retriever.search` applies it to every mode (QUERY_EXPANSION setting): the
sparse query adds the terms' keywords, the dense query embeds the mean of the question and
the question with each lay term replaced by the rules' term. Measured side by side in
bench/results/retrieval-vocab.md (`python -m bench.retrieval_vocab`).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core.settings import PROJECT_ROOT
from core.store import CONTENT_KEY, METADATA_KEY, keyword_tokens

EXPANSION_MODES = ("none", "glossary", "definitions", "both")
# How the dense ranking uses an expansion: embed `Expansion.dense_text(style)` (append,
# rewrite, inline), fuse the plain and the appended query's rankings, or (mean, the default)
# embed the normalized mean of the plain and the rewritten question's embeddings.
DENSE_STYLES = ("append", "rewrite", "inline", "fuse", "mean")
GLOSSARY_FILE = PROJECT_ROOT / "data" / "glossary.tsv"

# Definitions: a query this close (cosine) to a definition's sentence adds the defined term;
# at most DEFINITION_TOP of them, each within DEFINITION_MARGIN of the best. Off (None) by
# default: whole questions sit close to too many definitions (bench/retrieval_vocab.py).
DEFINITION_MIN_COSINE: float | None = None
DEFINITION_TOP = 2
DEFINITION_MARGIN = 0.05
# A lay word (one the documents almost never use) this close to a definition's sentence adds
# the defined term; "almost never": in at most RARE_CHUNKS chunks (or 1 in 1,000).
WORD_MIN_COSINE: float | None = 0.45
RARE_CHUNKS = 2
# The collection speaks a glossary term itself (no expansion) from this many chunks (or 1%).
SPOKEN_CHUNKS = 3
# Everyday words that are no one's vocabulary gap.
CONVERSATIONAL = frozenset(
    """about above across after again against ago almost along already also although always
    am among another anybody anyone anything anyway anywhere around away back bad because
    become been before being below best better between big bit both bought but came can't
    cannot come comes could couldn't did didn't doesn't doing don't done down during either
    else enough even ever every everybody everyone everything exactly far few find first
    fine get gets getting give given go goes going gone good got gotta guess had hasn't
    haven't having he her here hers him his hit i i'd i'll i'm i've if into isn't it's just
    keep keeps kind know last late later least less let let's like likely little long look
    lot lots made make makes many maybe me mean means might mine more most much my myself
    need needs never new next nice nobody none nothing now off often ok okay old once one
    only other others our ours out over own people please pretty probably put quite rather
    really right said same say saying says see seem seems several she should shouldn't
    show shown since so some somebody someone something sometimes somewhere soon still
    stuff sure take tell than thank thanks that's their theirs them themselves they thing
    things think though through thus till too took toward try trying until up upon us use
    used using very want wanted wants wasn't way we we're well went weren't what's whatever
    whether while whole whom whose why will without won't would wouldn't yeah yes yet you
    you're your yours yourself""".split()
)

Encoder = Callable[[list[str]], np.ndarray]


@dataclass
class Expansion:
    """What expansion added to a query: `terms`, and for each its origin
    ("glossary: walkie-talkie", "definitions: § 80.5")."""

    query: str
    terms: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    # (start, end, the rules' term): where a glossary term stands in the query.
    spans: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def keywords(self) -> list[str]:
        """The keywords the expansion adds to the sparse query."""
        return list(dict.fromkeys(keyword_tokens(" ".join(self.terms))))

    def __bool__(self) -> bool:
        return bool(self.terms)

    @property
    def text(self) -> str:
        """The query as searched: the user's words, then the rules' terms."""
        return f"{self.query} ({'; '.join(self.terms)})" if self.terms else self.query

    def dense_text(self, style: str = "append") -> str:
        """The text to embed. append: `text`; rewrite: each lay term replaced by its first
        expansion, the definitions' terms appended; inline: each lay term followed by its
        first expansion in parentheses."""
        if style == "append" or not self.spans:
            return self.text
        parts, last = [], 0
        for start, end, term in sorted(self.spans):
            lay = self.query[start:end]
            parts += [self.query[last:start], term if style == "rewrite" else f"{lay} ({term})"]
            last = end
        parts.append(self.query[last:])
        text = "".join(parts)
        extra = [t for t, o in zip(self.terms, self.origins, strict=True) if o.startswith("def")]
        return f"{text} ({'; '.join(extra)})" if extra else text

    def add(self, term: str, origin: str) -> bool:
        """Add `term` unless the query or an earlier term already says it."""
        known = {t.casefold() for t in self.terms}
        if term.casefold() in known or _contains(self.query, term):
            return False
        self.terms.append(term)
        self.origins.append(origin)
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"terms": list(self.terms), "origins": list(self.origins)}


def _contains(text: str, phrase: str) -> bool:
    """True when every keyword of `phrase` is already a keyword of `text`."""
    words = set(keyword_tokens(phrase))
    return bool(words) and words <= set(keyword_tokens(text))


# Glossary ----------------------------------------------------------------------------------


def _term_pattern(term: str) -> str:
    """A term as a regex: whole words, "-" and " " alike, an -s/-es plural allowed."""
    words = [re.escape(w) for w in re.split(r"[\s-]+", term.strip()) if w]
    body = r"[\s-]+".join(words)
    plural = "" if not term[-1:].isalpha() else "(?:s|es)?"
    return rf"(?<![\w-]){body}{plural}(?![\w-])"


_WORD = re.compile(r"[a-z0-9]+")


def _plural_match(tokens: Sequence[str], words: Sequence[str]) -> bool:
    """`tokens` are `words`, the last one perhaps with an -s/-es plural."""
    if len(tokens) != len(words) or list(tokens[:-1]) != list(words[:-1]):
        return False
    return tokens[-1] in (words[-1], words[-1] + "s", words[-1] + "es")


@dataclass(frozen=True)
class GlossaryEntry:
    term: str
    expansions: tuple[str, ...]
    note: str = ""

    @property
    def case_sensitive(self) -> bool:
        """Abbreviations written in capitals (ERP, DSC, VEs) match only in capitals."""
        letters = [c for c in self.term if c.isalpha()]
        return sum(c.isupper() for c in letters) >= 2


class Glossary:
    """Lay terms and abbreviations -> the rules' terms; the longest match wins."""

    def __init__(self, entries: Iterable[GlossaryEntry]):
        self.entries = sorted(entries, key=lambda e: -len(e.term))
        exact = [e for e in self.entries if e.case_sensitive]
        folded = [e for e in self.entries if not e.case_sensitive]
        self._patterns = [
            (re.compile("|".join(f"({_term_pattern(e.term)})" for e in group), flags), group)
            for group, flags in ((folded, re.IGNORECASE), (exact, 0))
            if group
        ]

        # For counting terms in documents fast: word sequences by their first word.
        self._single: dict[str, re.Pattern] = {}
        self._by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for entry in self.entries:
            words = tuple(_WORD.findall(entry.term.lower()))
            if words:
                self._by_first.setdefault(words[0], []).append((words, entry.term))

    def __len__(self) -> int:
        return len(self.entries)

    def terms_in(self, text: str) -> set[str]:
        """The glossary terms a document's text uses, by its keywords (plurals and case
        aside): fast enough to count over a whole collection, unlike `spans`."""
        tokens = _WORD.findall(text.lower())
        candidates = set()
        for i, token in enumerate(tokens):
            for first in {token, token.removesuffix("s"), token.removesuffix("es")}:
                for words, term in self._by_first.get(first, ()):
                    if _plural_match(tokens[i : i + len(words)], words):
                        candidates.add(term)
        # Confirmed by each term's own pattern (case, punctuation), as `spans` matches.
        return {term for term in candidates if self._pattern(term).search(text)}

    def _pattern(self, term: str) -> re.Pattern:
        pattern = self._single.get(term)
        if pattern is None:
            entry = next(e for e in self.entries if e.term == term)
            flags = 0 if entry.case_sensitive else re.IGNORECASE
            pattern = self._single[term] = re.compile(_term_pattern(term), flags)
        return pattern

    @classmethod
    def from_file(cls, path: Path | str = GLOSSARY_FILE) -> Glossary:
        """Read a glossary TSV: term, expansions separated by ";", optional note; "#" comments."""
        entries = []
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            columns = line.split("\t")
            expansions = (
                tuple(x.strip() for x in columns[1].split(";") if x.strip())
                if len(columns) > 1
                else ()
            )
            if not columns[0].strip() or not expansions:
                raise ValueError(f"{path}:{number}: expected 'term<TAB>expansion; ...'")
            note = columns[2].strip() if len(columns) > 2 else ""
            entries.append(GlossaryEntry(columns[0].strip(), expansions, note))
        return cls(entries)

    def spans(self, query: str) -> list[tuple[int, int, GlossaryEntry]]:
        """(start, end, entry) of each term the query uses, in order; overlaps: longest."""
        found: list[tuple[int, int, GlossaryEntry]] = []
        for pattern, group in self._patterns:
            for match in pattern.finditer(query):
                found.append((match.start(), match.end(), group[match.lastindex - 1]))
        found.sort(key=lambda m: (m[0], -(m[1] - m[0])))
        chosen, end = [], -1
        for start, stop, entry in found:
            if start >= end:
                chosen.append((start, stop, entry))
                end = stop
        return chosen

    def matches(self, query: str) -> list[GlossaryEntry]:
        """The entries whose term the query uses, in query order."""
        return [entry for _, _, entry in self.spans(query)]

    def expand(
        self,
        query: str,
        expansion: Expansion | None = None,
        spoken: Callable[[GlossaryEntry], bool] | None = None,
    ) -> Expansion:
        """Add the expansions of each term the query uses, except (with `spoken`) the terms
        the documents use themselves: "SAR" in a collection that says "SAR"."""
        expansion = Expansion(query) if expansion is None else expansion
        for start, end, entry in self.spans(query):
            if spoken is not None and spoken(entry):
                continue
            origin = f"glossary: {entry.term}"
            added = [term for term in entry.expansions if expansion.add(term, origin)]
            if added:
                expansion.spans.append((start, end, added[0]))
        return expansion


@lru_cache(maxsize=4)
def load_glossary(path: str = str(GLOSSARY_FILE)) -> Glossary:
    return Glossary.from_file(path)


# Definitions from the collection -----------------------------------------------------------

_DEFINITIONS_HEADING = re.compile(r"\bdefinitions?\b", re.IGNORECASE)
# "(4) Amateur service. A radiocommunication service ..." / "Associated ship unit. A portable ..."
_DEFINITION = re.compile(
    r"^(?:\(\w{1,4}\)\s*)*(?P<term>[A-Z][\w'’/,—-]*(?:[ —-][\w'’/,()—-]+){0,7}?)\.\s+(?P<body>[A-Z(].+)",
    re.DOTALL,
)
_ABBREVIATION = re.compile(r"\(([A-Z][A-Za-z]{1,7})\)")
_LEADING_ABBREVIATION = re.compile(r"^([A-Z][A-Z0-9]{1,7})\s*\(([^)]+)\)")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)])\.\s")


@dataclass(frozen=True)
class Definition:
    term: str  # "Associated ship unit", "Digital selective calling (DSC)"
    body: str  # its first sentence(s)
    section: str | None = None

    @property
    def abbreviations(self) -> tuple[str, ...]:
        """ "DSC" for "Digital selective calling (DSC)" and for "DSC (digital selective
        calling)"; "FAA" for "FAA" defined as a name."""
        leading = _LEADING_ABBREVIATION.match(self.term)
        if leading:
            return (leading.group(1),)
        found = _ABBREVIATION.findall(self.term)
        if not found and self.term.isupper() and 2 <= len(self.term) <= 6:
            found = [self.term]
        return tuple(found)

    @property
    def plain_term(self) -> str:
        """The term without its abbreviation: "Digital selective calling"."""
        leading = _LEADING_ABBREVIATION.match(self.term)
        if leading:
            return " ".join(leading.group(2).split())
        return " ".join(_ABBREVIATION.sub("", self.term).split()) or self.term


def parse_definitions(text: str, section: str | None = None) -> list[Definition]:
    """The "Term. Definition." paragraphs of a definitions section's text."""
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        match = _DEFINITION.match(paragraph.strip())
        if not match:
            continue
        term, body = match.group("term").strip(), " ".join(match.group("body").split())
        if term.lower().startswith(("the ", "this ", "see ", "these ")) or len(term) < 2:
            continue
        first = _SENTENCE_END.split(body, maxsplit=2)
        found.append(Definition(term, ". ".join(first[:2])[:400], section))
    return found


class CorpusDefinitions:
    """A collection's definitions (with embedded sentences) and its word counts.

    `vocabulary` counts the chunks each keyword occurs in: a query word the documents
    (almost) never use is the user's word, not the rules' ("walkie", "kid", "ham").
    """

    def __init__(
        self,
        definitions: Sequence[Definition],
        vectors: np.ndarray | None,
        vocabulary: Counter | None = None,
        chunks: int = 0,
        term_chunks: Counter | None = None,
        encode: Encoder | None = None,
    ):
        """`vectors`: the definitions' embedded sentences, or None to embed them with
        `encode` when first needed (a glossary-only expansion never needs them)."""
        self.definitions = list(definitions)
        self._vectors = vectors
        self._encode = encode
        self.vocabulary = vocabulary if vocabulary is not None else Counter()
        self.chunks = chunks
        self.term_chunks = term_chunks if term_chunks is not None else Counter()
        self._by_abbreviation: dict[str, Definition] = {}
        for definition in self.definitions:
            for abbreviation in definition.abbreviations:
                self._by_abbreviation.setdefault(abbreviation, definition)

    def __len__(self) -> int:
        return len(self.definitions)

    @property
    def vectors(self) -> np.ndarray | None:
        if self._vectors is None and self._encode is not None and self.definitions:
            self._vectors = self._encode([d.body for d in self.definitions])
        return self._vectors

    @classmethod
    def from_collection(
        cls, client: Any, collection: str, encode: Encoder, glossary: Glossary | None = None
    ) -> CorpusDefinitions:
        """One pass over the collection: word counts, the chunks using each glossary term,
        and the definitions of the chunks under a "Definitions" heading."""
        vocabulary: Counter = Counter()
        term_chunks: Counter = Counter()
        definitions: dict[str, Definition] = {}
        chunks, offset = 0, None
        while True:
            points, offset = client.scroll(
                collection,
                limit=512,
                offset=offset,
                with_payload=[CONTENT_KEY, f"{METADATA_KEY}.heading", f"{METADATA_KEY}.section"],
                with_vectors=False,
            )
            for point in points:
                payload = point.payload or {}
                meta = payload.get(METADATA_KEY) or {}
                text = payload.get(CONTENT_KEY) or ""
                chunks += 1
                vocabulary.update(set(keyword_tokens(text)))
                if glossary is not None:
                    term_chunks.update(glossary.terms_in(text))
                if not _DEFINITIONS_HEADING.search(meta.get("heading") or ""):
                    continue
                section = meta.get("section")
                for definition in parse_definitions(text, section):
                    key = f"{section}:{definition.term.casefold()}"
                    known = definitions.get(key)
                    if known is None or len(definition.body) > len(known.body):
                        definitions[key] = definition  # chunk overlap: keep the fuller copy
            if offset is None:
                break
        ordered = sorted(definitions.values(), key=lambda d: (d.section or "", d.term))
        return cls(ordered, None, vocabulary, chunks, term_chunks, encode)

    def rare(self, word: str) -> bool:
        """A word at most RARE_CHUNKS chunks (or 1 in 1,000) use."""
        return self.vocabulary.get(word, 0) <= max(RARE_CHUNKS, self.chunks // 1000)

    def speaks(self, entry: GlossaryEntry) -> bool:
        """True when the documents use a glossary term themselves: in at least 1 chunk in
        100 (and 3 chunks). "SAR" in RF-exposure guidance needs no expansion; "boat" in
        47 CFR Part 80 (6 of 1,260 chunks) does."""
        return self.term_chunks.get(entry.term, 0) >= max(SPOKEN_CHUNKS, self.chunks / 100)

    def lay_words(self, query: str, covered: Sequence[tuple[int, int]] = ()) -> list[str]:
        """The query's words the documents (almost) never use, outside `covered` spans;
        hyphenated words stay whole ("walkie-talkie")."""
        found = []
        for match in re.finditer(r"[A-Za-z][A-Za-z'-]*[A-Za-z]", query):
            if any(start <= match.start() < end for start, end in covered):
                continue
            word = match.group(0)
            tokens = keyword_tokens(word)
            if word.lower() in CONVERSATIONAL or not tokens or len(word) < 3:
                continue
            if all(self.rare(token) for token in tokens):
                found.append(word)
        return list(dict.fromkeys(found))

    def expand(
        self,
        query: str,
        expansion: Expansion,
        encode: Encoder | None = None,
        query_vector: np.ndarray | None = None,
        min_cosine: float | None = DEFINITION_MIN_COSINE,
        word_min_cosine: float | None = WORD_MIN_COSINE,
        top: int = DEFINITION_TOP,
    ) -> Expansion:
        """Add defined terms: for an abbreviation the query uses ("DSC"); for each lay word,
        the definition whose sentence is closest to it (cosine >= `word_min_cosine`); for the
        whole query (`query_vector`), up to `top` definitions with cosine >= `min_cosine`."""
        for token in re.findall(r"\b[A-Z][A-Za-z]{1,7}\b", query):
            definition = self._by_abbreviation.get(token)
            if definition is None:
                continue
            if definition.plain_term != token:
                expansion.add(definition.plain_term, _origin(definition))
            elif len(definition.body.split()) <= 6:  # "FAA. Federal Aviation Administration."
                expansion.add(definition.body.rstrip("."), _origin(definition))
        if self.vectors is None:
            return expansion
        if word_min_cosine is not None and encode is not None:
            covered = [(start, end) for start, end, _ in expansion.spans]
            words = self.lay_words(expansion.query, covered)
            if words:
                cosines = encode(words) @ self.vectors.T
                for row in cosines:
                    best = int(np.argmax(row))
                    if row[best] >= word_min_cosine:
                        self._add(expansion, self.definitions[best])
        if min_cosine is not None and query_vector is not None and top > 0:
            cosines = self.vectors @ query_vector
            order = np.argsort(-cosines)[:top]
            best = float(cosines[order[0]])
            for index in order:
                cosine = float(cosines[index])
                if cosine < min_cosine or cosine < best - DEFINITION_MARGIN:
                    break
                self._add(expansion, self.definitions[index])
        return expansion

    @staticmethod
    def _add(expansion: Expansion, definition: Definition) -> None:
        expansion.add(definition.plain_term, _origin(definition))


def _origin(definition: Definition) -> str:
    return f"definitions: § {definition.section}" if definition.section else "definitions"


_definitions_cache: dict[tuple[int, str, int], tuple[int, CorpusDefinitions]] = {}
_definitions_lock = threading.Lock()


def collection_definitions(
    client: Any, collection: str, encode: Encoder, glossary: Glossary | None = None
) -> CorpusDefinitions:
    """The collection's definitions and counts (`CorpusDefinitions.from_collection`), read
    once and again when its point count changes (an ingest)."""
    count = client.count(collection, exact=False).count
    key = (id(client), collection, id(glossary))
    with _definitions_lock:
        cached = _definitions_cache.get(key)
        if cached and cached[0] == count:
            return cached[1]
    definitions = CorpusDefinitions.from_collection(client, collection, encode, glossary)
    with _definitions_lock:
        _definitions_cache[key] = (count, definitions)
    return definitions


# The expander ------------------------------------------------------------------------------


class QueryExpander:
    """Expand a query by the glossary, the collection's definitions, both, or neither.

    `sparse_weight`: the weight of an added keyword in the sparse query (the user's own words
    weigh 1). `dense`: how the dense ranking uses the expansion (DENSE_STYLES).
    `definition_min_cosine` / `word_min_cosine`: the definitions' thresholds for the whole
    query and for a lay word (None: that match is off). `vocabulary_gaps`: expand a glossary
    term only where the collection rarely uses the user's words (needs the collection).
    """

    def __init__(
        self,
        mode: str = "both",
        glossary: Glossary | None = None,
        sparse_weight: float = 1.0,
        dense: str = "mean",
        definition_min_cosine: float | None = DEFINITION_MIN_COSINE,
        word_min_cosine: float | None = WORD_MIN_COSINE,
        definition_top: int = DEFINITION_TOP,
        vocabulary_gaps: bool = True,
    ):
        if mode not in EXPANSION_MODES:
            raise ValueError(f"Unknown query expansion {mode!r}; use one of {EXPANSION_MODES}")
        if dense not in DENSE_STYLES:
            raise ValueError(f"dense must be one of {DENSE_STYLES}")
        self.mode = mode
        self._glossary = glossary
        self.sparse_weight = sparse_weight
        self.dense = dense
        self.definition_min_cosine = definition_min_cosine
        self.word_min_cosine = word_min_cosine
        self.definition_top = definition_top
        self.vocabulary_gaps = vocabulary_gaps

    @property
    def dense_text_style(self) -> str:
        """The `Expansion.dense_text` style the dense ranking embeds."""
        return {"fuse": "append", "mean": "rewrite"}.get(self.dense, self.dense)

    @property
    def uses_glossary(self) -> bool:
        return self.mode in ("glossary", "both")

    @property
    def uses_definitions(self) -> bool:
        return self.mode in ("definitions", "both")

    @property
    def glossary(self) -> Glossary:
        if self._glossary is None:
            self._glossary = load_glossary()
        return self._glossary

    def expand(
        self,
        query: str,
        client: Any = None,
        collection: str | None = None,
        encode: Encoder | None = None,
        vectors: dict[str, np.ndarray] | None = None,
    ) -> Expansion:
        """The expansion of `query`. Definitions need `client`, `collection` and `encode`;
        `vectors` caches embeddings by text (the caller reuses them for dense search)."""
        expansion = Expansion(query)
        definitions = None
        needs_collection = self.uses_definitions or (self.uses_glossary and self.vocabulary_gaps)
        if needs_collection and client is not None and collection and encode is not None:
            glossary = self.glossary if self.uses_glossary else None
            definitions = collection_definitions(client, collection, encode, glossary)
        if self.uses_glossary:
            spoken = definitions.speaks if definitions and self.vocabulary_gaps else None
            self.glossary.expand(query, expansion, spoken)
        if self.uses_definitions and definitions is not None and len(definitions):
            query_vector = None
            if self.definition_min_cosine is not None:
                text = expansion.dense_text(self.dense_text_style)
                cache = vectors if vectors is not None else {}
                if text not in cache:
                    cache[text] = encode([text])[0]
                query_vector = cache[text]
            definitions.expand(
                expansion.text,
                expansion,
                encode=encode,
                query_vector=query_vector,
                min_cosine=self.definition_min_cosine,
                word_min_cosine=self.word_min_cosine,
                top=self.definition_top,
            )
        return expansion
