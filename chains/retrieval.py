"""Search the ingested chunks: dense, keyword (BM25-style sparse), hybrid (RRF) and MMR.

Every hit carries `dense_score`, the cosine between the query and the chunk embedding,
whatever the mode, so the chains can apply one relevance threshold. In hybrid mode the
dense and the sparse ranking are fetched in one batch request and fused here with
reciprocal-rank fusion (same result on the embedded store and on a server; Qdrant's own
`FusionQuery(RRF)` also works in local mode but returns no cosine for sparse-only hits).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, model_validator
from qdrant_client import QdrantClient, models

from chains.evidence import content_tokens, is_lead_in
from chains.qualifiers import bands_as_written, find_abbreviations, find_band_ranges
from core.records import RetrievedChunk
from core.settings import Settings, get_settings
from core.store import (
    CONTENT_KEY,
    DENSE,
    METADATA_KEY,
    SPARSE,
    get_client,
    get_sentence_model,
    keyword_ids,
    metadata_filter,
    sparse_query_vector,
)

log = logging.getLogger(__name__)

MODES = ("dense", "hybrid", "bm25")
_ABBREVIATIONS: dict[tuple, dict[str, str]] = {}  # (client, collection, points) -> abbreviations
_BAND_RANGES: dict[tuple, dict[str, tuple[float, float]]] = {}  # the same key -> band plan
_STANDARDS: dict[tuple, dict[str, str]] = {}  # the same key -> {section: section its table cites}
# A table column of paragraph references to another section: "Standards see § 97.307,
# paragraph(s):" (§ 97.305(c): each band's row names the paragraphs of § 97.307 it follows).
_CITED_COLUMN = re.compile(r"\|[^|\n]*§\s*(\d{1,3}\.\d{1,4}[a-z]?)\b[^|\n]*paragraph", re.I)
RRF_K = 60

SECTION_CHUNKS = 12  # a section's chunks ranked beside the retrieved ones (with_section_chunks)
# Keyword feedback for questions in the asker's own words (`_with_feedback`): the words at least
# FEEDBACK_MIN_CHUNKS of the dense ranking's best FEEDBACK_CHUNKS chunks share, at most
# FEEDBACK_WORDS of them, join the keyword query at FEEDBACK_WEIGHT (the asker's words: 1).
# Measured (section hit@1 of the hybrid ranking, eCFR lay questions / exam / sample set):
# 0.370 / 0.805 / 0.598 without; 0.463 / 0.810 / 0.586 as set; 0.481 / 0.790 / 0.575 at
# weight 0.3; for every question, not only the asker's words, 0.481 / 0.790 / 0.540.
FEEDBACK_CHUNKS = 3
FEEDBACK_MIN_CHUNKS = 2
FEEDBACK_WORDS = 10
FEEDBACK_WEIGHT = 0.15
# "15.109", "§ 2.1093(d)": a query naming a section id also ranks that section's chunks.
_SECTION_ID = re.compile(r"(?<![\d.])(\d{1,3}\.\d{1,4}[a-z]?)(?![\d.]*\d)")
# ... but "1.5 kW", "2.4 GHz", "0.5 percent" are quantities, not sections: read as section ids
# they bypassed the relevance threshold, so an off-corpus question about "1.5 kW" never
# abstained. A number followed by a unit is a quantity; "§"/"section" before it wins.
_UNIT_AFTER = re.compile(
    r"\s*(?:[kKMGTmµu]?(?:W|Hz|V|A|m)\b|(?i:dB\w*|%|percent\b|watts?\b|volts?\b|"
    r"kilo\w+|mega\w+|giga\w+|meters?\b|km\b|ft\b|feet\b|miles?\b|seconds?\b|minutes?\b|"
    r"hours?\b|days?\b|years?\b|PEP\b|ERP\b|EIRP\b|times\b))"
)
# "28.0-28.5 MHz": the first number of a range whose unit follows the second.
_RANGE_AFTER = re.compile(
    r"\s*(?:-|–|—|\bto\b|\bthrough\b|\band\b)\s*\d+(?:\.\d+)?" + _UNIT_AFTER.pattern
)  # "28.0-28.5 MHz", "between 28.300 and 28.500 MHz"
_PART_REF = re.compile(r"\bPart\s+(\d{1,3})\b(?![.\d])")  # "Part 15", not "part of"
_SECTION_SIGN_BEFORE = re.compile(r"(?:§{1,2}|\bsec(?:tion|s?\.)|\bpart)\s*$", re.IGNORECASE)
FILTER_FIELDS = ("source", "section", "part", "doc_type", "page", "root", "title", "subpart")


def build_filter(filters: dict | None) -> models.Filter | None:
    """{"source": "a.pdf", "section": ["15.109"], "part": "15"} -> a Qdrant filter."""
    if not filters:
        return None
    unknown = set(filters) - set(FILTER_FIELDS)
    if unknown:
        raise ValueError(f"Unknown filter field(s) {sorted(unknown)}; use {list(FILTER_FIELDS)}")
    return metadata_filter(**filters)


# A word in at least this share of the chunks is the corpus's own domain (`uncovered_words`):
# in Parts 97 + 80, "ship" 33%, "power" 13%, "maritime" 12%, "amateur" 8%; "FM", "cable",
# "microphone", "broadcast" under 2%.
COMMON_WORD_SHARE = 0.05


def section_ids(query: str) -> list[str]:
    """Section ids a query names, e.g. ["15.109"] for "What does § 15.109(a) require?".

    Quantities are not sections: "1.5 kW", "2.4 GHz", "0.5 percent" name none.
    """
    found = []
    for match in _SECTION_ID.finditer(query):
        explicit = _SECTION_SIGN_BEFORE.search(query[: match.start()])
        quantity = (
            match.group(1).startswith("0")
            or _UNIT_AFTER.match(query, match.end())
            or _RANGE_AFTER.match(query, match.end())
        )
        if explicit or not quantity:
            found.append(match.group(1))
    return list(dict.fromkeys(found))


def _and(*filters: models.Filter | None) -> models.Filter | None:
    present = [f for f in filters if f is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else models.Filter(must=present)


def _phrase_key(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", text.lower()))


def rrf_fuse(rankings: list[list[str]], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal-rank fusion: sum over rankings of 1 / (k + rank), rank starting at 1."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, point_id in enumerate(ranking, start=1):
            scores[point_id] = scores.get(point_id, 0.0) + 1.0 / (k + rank)
    return scores


def _cited_columns(records) -> dict[str, str]:
    """{section: the section its table's paragraph-reference column cites} (`_CITED_COLUMN`)."""
    found: dict[str, str] = {}
    for text, metadata in records:
        match = _CITED_COLUMN.search(text)
        if match and metadata.get("section"):
            found.setdefault(metadata["section"], match.group(1))
    return found


class Retriever:
    def __init__(
        self,
        collection: str | None = None,
        settings: Settings | None = None,
        client: QdrantClient | None = None,
    ):
        """`client` overrides the shared store client (e.g. an in-memory one in benchmarks)."""
        self.settings = settings or get_settings()
        self.collection = collection or self.settings.collection_name
        self._client = client

    @property
    def client(self) -> QdrantClient:
        return self._client or get_client(self.settings)

    def count(self) -> int:
        if not self.client.collection_exists(self.collection):
            return 0
        return self.client.count(self.collection, exact=True).count

    def embed_query(self, query: str) -> np.ndarray:
        model = get_sentence_model(self.settings)
        vector = model.encode(
            [query], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vector[0], dtype=np.float32)

    # Search ----------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 4,
        mode: str | None = None,
        filters: dict | None = None,
        score_threshold: float | None = None,
        fetch_k: int | None = None,
        section_chunks: int = 0,
    ) -> list[RetrievedChunk]:
        """The `k` best chunks, best first. `score_threshold` applies to the dense cosine.
        `section_chunks`: then the other chunks of the first N sections among them
        (`with_section_chunks`, with the query embedded once)."""
        mode = mode or self.settings.retrieval_mode
        if mode not in MODES:
            raise ValueError(f"Unknown retrieval mode {mode!r}; use one of {MODES}")
        if not query.strip() or k <= 0 or not self.client.collection_exists(self.collection):
            return []
        dense_vector = self.embed_query(query)
        hits = self._ranked(query, dense_vector, k, mode, filters, score_threshold, fetch_k)
        if not section_chunks:
            return hits
        hits = self.with_section_chunks(query, hits, section_chunks, filters, dense_vector)
        return self.with_continuations(hits, dense_vector, filters)

    def _ranked(self, query, dense_vector, k, mode, filters, score_threshold, fetch_k):
        query_filter = build_filter(filters)
        fetch_k = max(fetch_k or 4 * k, k, 20 if mode == "hybrid" else k)
        if mode == "dense":
            return self._dense(dense_vector, k, query_filter, score_threshold)
        # Keywords as the rules write them: "2200 meter band" -> "2200 m band" ("meter" matched
        # Part 80's antenna heights). The embedder reads the asker's words better as they are:
        # "the 60-meter ham band" is § 97.313, "the 60 m ham band" § 80.215 (dense hit@1).
        sparse_vector = sparse_query_vector(bands_as_written(query))
        if mode == "hybrid":
            sparse_vector = self._with_feedback(query, sparse_vector, dense_vector, query_filter)
        if mode == "bm25":
            if not sparse_vector.indices:
                return []
            # Over-fetch so that the threshold on the dense cosine still leaves k hits.
            limit = fetch_k if score_threshold is not None else k
            hits = self._sparse(sparse_vector, limit, query_filter)
            self._fill_dense_scores(hits, dense_vector)
            return self._threshold(hits, score_threshold)[:k]
        return self._hybrid(
            dense_vector, sparse_vector, k, fetch_k, query_filter, score_threshold, query
        )

    def _with_feedback(self, query, sparse_vector, dense_vector, query_filter):
        """The keyword query, with the words the dense ranking's best chunks share when the
        question uses a word no document does ("ham", "walkie-talkie"): the rules' own words
        for what it asks. "What's the most power I can run on my ham rig?" matched Part 80's
        ship power rules on "power"; with the words the embedder's best chunks share, § 97.313
        comes first. A question in the documents' words is searched as asked: on the exam set
        the feedback cost first hits."""
        if not sparse_vector.indices or not self.absent_terms(sorted(content_tokens(query))):
            return sparse_vector
        best = self._dense(dense_vector, FEEDBACK_CHUNKS, query_filter)
        shared = Counter(word for hit in best for word in keyword_ids(hit.text))
        asked = set(sparse_vector.indices)
        words = [
            word
            for word, chunks in shared.most_common()
            if chunks >= FEEDBACK_MIN_CHUNKS and word not in asked
        ][:FEEDBACK_WORDS]
        return models.SparseVector(
            indices=[*sparse_vector.indices, *words],
            values=[*sparse_vector.values, *[FEEDBACK_WEIGHT] * len(words)],
        )

    def with_section_chunks(
        self,
        query: str,
        hits: list[RetrievedChunk],
        sections: int,
        filters: dict | None = None,
        dense_vector: np.ndarray | None = None,
    ) -> list[RetrievedChunk]:
        """`hits`, then the other chunks of the first `sections` sections among them (closest
        first by the dense cosine, at most SECTION_CHUNKS per section). The paragraph for the
        asked case often lies in a chunk of the right section that did not rank: for "the
        60-meter ham band" the chunk of § 97.313(a)-(d) was retrieved, not the one holding
        (i), 100 W PEP on the 60 m band. `dense_vector`: the query's, when already embedded."""
        named = list(dict.fromkeys(hit.section for hit in hits if hit.section))[:sections]
        if not named:
            return hits
        if dense_vector is None:
            dense_vector = self.embed_query(query)
        condition = _and(build_filter(filters), metadata_filter(section=named))
        seen = {hit.id for hit in hits}
        more = self._dense(dense_vector, SECTION_CHUNKS * len(named), condition)
        more = [hit for hit in more if hit.id not in seen]
        for hit in more:
            hit.matched_by = ["section_chunk"]
        return hits + more

    def with_continuations(
        self, hits: list[RetrievedChunk], dense_vector: np.ndarray, filters: dict | None = None
    ) -> list[RetrievedChunk]:
        """`hits`, then the next chunk of each hit that ends in a lead-in: the list or table
        it introduces is there. § 97.301(d) "For a station having a control operator who has
        been granted an operator license of General Class:" ended its chunk, and its table
        (the 20 m segments asked for) began the next one."""
        seen = {hit.id for hit in hits}
        more: list[RetrievedChunk] = []
        for hit in hits:
            if not is_lead_in(hit.text) or hit.chunk_index is None:
                continue
            following = metadata_filter(
                source=hit.source, root=hit.metadata.get("root"), chunk_index=hit.chunk_index + 1
            )
            condition = _and(build_filter(filters), following)
            records, _ = self.client.scroll(
                self.collection, scroll_filter=condition, limit=1, with_payload=True
            )
            for record in records:
                chunk = RetrievedChunk.from_record(record)
                if chunk.id not in seen:
                    seen.add(chunk.id)
                    chunk.matched_by = ["continuation"]
                    more.append(chunk)
        self._fill_dense_scores(more, dense_vector)
        for chunk in more:
            chunk.score = chunk.dense_score
        return hits + more

    def _points(self, response) -> list[RetrievedChunk]:
        return [RetrievedChunk.from_record(point, score=point.score) for point in response.points]

    def _dense(self, vector, limit, query_filter, score_threshold=None) -> list[RetrievedChunk]:
        response = self.client.query_points(
            self.collection,
            query=vector.tolist(),
            using=DENSE,
            query_filter=query_filter,
            limit=limit,
            score_threshold=score_threshold,
            with_payload=True,
        )
        hits = self._points(response)
        for hit in hits:
            hit.dense_score = hit.score
            hit.matched_by.append("dense")
        return hits

    def _sparse(self, vector, limit, query_filter) -> list[RetrievedChunk]:
        response = self.client.query_points(
            self.collection,
            query=vector,
            using=SPARSE,
            query_filter=query_filter,
            limit=limit,
            with_payload=True,
        )
        hits = self._points(response)
        for hit in hits:
            hit.matched_by.append("sparse")
        return hits

    def _hybrid(
        self, dense_vector, sparse_vector, k, fetch_k, query_filter, score_threshold, query
    ):
        """Fuse up to three rankings: dense, sparse keywords, and the dense ranking inside the
        sections the query names (so "What does 15.109 require?" finds § 15.109 even where
        the words of the question match other sections better)."""

        def request(query_vector, using, query_filter):
            return models.QueryRequest(
                query=query_vector,
                using=using,
                filter=query_filter,
                limit=fetch_k,
                with_payload=True,
            )

        requests = {"dense": request(dense_vector.tolist(), DENSE, query_filter)}
        if sparse_vector.indices:
            requests["sparse"] = request(sparse_vector, SPARSE, query_filter)
        named = section_ids(query)
        if named:
            in_sections = _and(query_filter, metadata_filter(section=named))
            requests["section"] = request(dense_vector.tolist(), DENSE, in_sections)
        responses = self.client.query_batch_points(
            self.collection, requests=list(requests.values())
        )
        rankings = [self._points(response) for response in responses]
        by_id: dict[str, RetrievedChunk] = {}
        for name, ranking in zip(requests, rankings, strict=True):
            for hit in ranking:
                if requests[name].using == DENSE:
                    hit.dense_score = hit.score
                known = by_id.setdefault(hit.id, hit)
                known.matched_by.append(name)
                if known.dense_score is None:
                    known.dense_score = hit.dense_score
        fused = rrf_fuse([[hit.id for hit in ranking] for ranking in rankings])
        hits = [by_id[point_id] for point_id in sorted(fused, key=fused.get, reverse=True)]
        for hit in hits:
            hit.score = fused[hit.id]
        self._fill_dense_scores(hits, dense_vector)
        return self._threshold(hits, score_threshold)[:k]

    def _fill_dense_scores(self, hits: list[RetrievedChunk], dense_vector: np.ndarray) -> None:
        """Cosine of sparse-only hits, from their stored (normalized) dense vectors."""
        missing = [hit for hit in hits if hit.dense_score is None]
        if not missing:
            return
        records = self.client.retrieve(
            self.collection,
            ids=[hit.id for hit in missing],
            with_payload=False,
            with_vectors=[DENSE],
        )
        vectors = {str(record.id): record.vector for record in records}
        for hit in missing:
            stored = vectors.get(hit.id)
            stored = stored.get(DENSE) if isinstance(stored, dict) else stored
            if stored is not None:
                candidate = np.asarray(stored, dtype=np.float32)
                norm = float(np.linalg.norm(candidate)) or 1.0
                hit.dense_score = float(candidate @ dense_vector) / norm

    @staticmethod
    def _threshold(
        hits: list[RetrievedChunk], score_threshold: float | None
    ) -> list[RetrievedChunk]:
        """Keep hits with dense cosine >= threshold, and hits of a section the query names
        (a question like "What does 15.109 require?" embeds far from any paragraph)."""
        if score_threshold is None:
            return hits
        return [
            hit
            for hit in hits
            if "section" in hit.matched_by
            or (hit.dense_score is not None and hit.dense_score >= score_threshold)
        ]

    def missing_references(self, query: str) -> list[str]:
        """The sections ("§ 15.407") and parts ("Part 90") the query names that no chunk of
        the collection belongs to: asked about a rule the documents do not hold."""
        if not self.client.collection_exists(self.collection):
            return []
        missing = [f"§ {s}" for s in section_ids(query) if not self._holds(section=s)]
        missing += [f"Part {p}" for p in _PART_REF.findall(query) if not self._holds(part=p)]
        return missing

    def _holds(self, **condition: str) -> bool:
        return bool(
            self.client.count(
                self.collection, count_filter=metadata_filter(**condition), exact=False
            ).count
        )

    def absent_terms(self, terms: Sequence[str]) -> list[str]:
        """The terms no chunk of the collection contains (by the keyword index)."""
        return [t for t in terms if self._keyword_texts(t, limit=1) == []]

    def absent_phrases(self, phrases: Sequence[str], candidates: int = 20) -> list[str]:
        """The phrases no chunk contains word for word (case, hyphens and line breaks
        aside). Read in the `candidates` chunks the keyword index ranks best for each
        phrase: a chunk holding the whole phrase holds all its words, so it ranks there."""
        absent = []
        for phrase in phrases:
            texts = self._keyword_texts(phrase, limit=candidates)
            wanted = f" {_phrase_key(phrase)} "
            if texts is not None and not any(wanted in f" {_phrase_key(t)} " for t in texts):
                absent.append(phrase)
        return absent

    def uncovered_words(self, words: Sequence[str], passages: Sequence[Any]) -> list[str]:
        """The `words` that the documents use, but not in the sections the passages come from
        (the whole section, heading included; the whole document for passages without one).

        Asked about "a low power FM broadcast station", the best passages are the amateur 60 m
        rule (§ 97.313(i)); "FM" and "broadcast" are in the documents (VHF-FM, international
        broadcast stations) but nowhere in § 97.313, so it is not the rule asked about. Words
        no document uses ("ham", "walkie") are the asker's own, and say nothing here."""
        if not words or not passages:
            return []
        sections = sorted({p.section for p in passages if p.section})
        sources = sorted({p.source for p in passages if not p.section and p.source})
        texts = [
            text
            for field, values in (("section", sections), ("source", sources))
            if values
            for text in self._texts(metadata_filter(**{field: values}))
        ]
        texts += [p.heading or "" for p in passages]
        present = content_tokens(" ".join(texts))
        missing = [word for word in words if not content_tokens(word) <= present]
        if not missing:
            return []
        common = max(3, math.ceil(COMMON_WORD_SHARE * self.count()))
        return [word for word in missing if self._rare(word, common)]

    def _rare(self, word: str, common: int) -> bool:
        """Used by the documents, in fewer than COMMON_WORD_SHARE of the chunks. A word most
        rules use ("maritime", "amateur", "ship") is the corpus's own domain: a section may
        leave it unsaid and still be the rule asked about ("a maritime radiotelephone
        station" identifying is § 80.102, which never says "maritime")."""
        texts = self._keyword_texts(word, limit=common)
        if not texts:
            return False  # no document uses it: the asker's own word ("ham", "walkie")
        # The index also reads each chunk's heading: count the chunks whose text says it.
        holding = sum(content_tokens(word) <= content_tokens(text) for text in texts)
        return holding < common / 2

    def _keyword_texts(self, text: str, limit: int) -> list[str] | None:
        """The texts of the `limit` chunks the keyword index ranks best for `text` ([] in an
        empty or missing collection); None when `text` has no indexed word to look for."""
        vector = sparse_query_vector(text)
        if not vector.indices:
            return None
        if not self.client.collection_exists(self.collection):
            return []
        response = self.client.query_points(
            self.collection, query=vector, using=SPARSE, limit=limit, with_payload=[CONTENT_KEY]
        )
        return [(point.payload or {}).get(CONTENT_KEY) or "" for point in response.points]

    def abbreviations(self) -> dict[str, str]:
        """The abbreviations the collection's documents define ({"SS": "spread spectrum"})
        (`chains.qualifiers.find_abbreviations`)."""
        return self._read_once(_ABBREVIATIONS, find_abbreviations)

    def band_ranges(self) -> dict[str, tuple[float, float]]:
        """The frequencies the collection's band-plan tables give each band ({"20m": (14.0e6,
        14.35e6)}) (`chains.qualifiers.find_band_ranges`)."""
        return self._read_once(_BAND_RANGES, find_band_ranges)

    def cited_sections(self) -> dict[str, str]:
        """{"97.305": "97.307"}: the sections whose table has a column of paragraph references
        to another section (the header "Standards see § 97.307, paragraph(s):")."""
        return self._read_once(_STANDARDS, _cited_columns, metadata=True)

    def _read_once(self, cache: dict, read, metadata: bool = False):
        """`read(the chunks' texts)` (with `metadata`: their (text, metadata) pairs), once per
        collection and size ({} without one)."""
        if not self.client.collection_exists(self.collection):
            return {}
        key = (id(self.client), self.collection, self.count())
        if key not in cache:
            cache[key] = read(self._records(metadata=True) if metadata else self._texts())
        return cache[key]

    def _texts(self, condition: models.Filter | None = None):
        """The chunks' texts (those matching `condition`), page by page."""
        return (text for text, _ in self._records(condition))

    def _records(self, condition: models.Filter | None = None, metadata: bool = False):
        """(text, metadata) of the chunks matching `condition`, page by page; the metadata
        is {} unless asked for (the texts alone are read on every question)."""
        fields = [CONTENT_KEY, METADATA_KEY] if metadata else [CONTENT_KEY]
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection, scroll_filter=condition, limit=256, offset=offset,
                with_payload=fields, with_vectors=False,
            )  # fmt: skip
            for record in records:
                payload = record.payload or {}
                yield payload.get(CONTENT_KEY) or "", payload.get(METADATA_KEY) or {}
            if offset is None:
                return

    # MMR ---------------------------------------------------------------------------------------

    def mmr(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filters: dict | None = None,
        score_threshold: float | None = None,
    ) -> list[RetrievedChunk]:
        """Maximal marginal relevance over the `fetch_k` nearest chunks (diverse top k)."""
        if not query.strip() or k <= 0 or not self.client.collection_exists(self.collection):
            return []
        query_vector = self.embed_query(query)
        response = self.client.query_points(
            self.collection,
            query=query_vector.tolist(),
            using=DENSE,
            query_filter=build_filter(filters),
            limit=max(fetch_k, k),
            score_threshold=score_threshold,
            with_payload=True,
            with_vectors=[DENSE],
        )
        points = response.points
        if not points:
            return []
        matrix = np.asarray(
            [p.vector[DENSE] if isinstance(p.vector, dict) else p.vector for p in points],
            dtype=np.float32,
        )
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True).clip(min=1e-12)
        relevance = matrix @ query_vector
        chosen: list[int] = []
        candidates = list(range(len(points)))
        while candidates and len(chosen) < k:
            if chosen:
                redundancy = (matrix[candidates] @ matrix[chosen].T).max(axis=1)
            else:
                redundancy = np.zeros(len(candidates), dtype=np.float32)
            values = lambda_mult * relevance[candidates] - (1 - lambda_mult) * redundancy
            best = candidates[int(np.argmax(values))]
            chosen.append(best)
            candidates.remove(best)
        hits = []
        for index in chosen:
            hit = RetrievedChunk.from_record(points[index], score=float(points[index].score))
            hit.dense_score = hit.score
            hit.matched_by.append("dense")
            hits.append(hit)
        return hits

    # LangChain ---------------------------------------------------------------------------------

    def as_langchain_retriever(
        self, search_type: str = "similarity", **search_kwargs: Any
    ) -> ChunkRetriever:
        """A LangChain BaseRetriever over this one; `search_type="mmr"` uses .mmr, else .search.

        `search_kwargs` (k, mode, filters, score_threshold, fetch_k, lambda_mult) become the
        retriever's defaults; each call may override them: `.invoke(query, k=1)`.
        """
        return ChunkRetriever(retriever=self, search_type=search_type, **search_kwargs)


SEARCH_OPTIONS = ("k", "mode", "filters", "score_threshold", "fetch_k", "lambda_mult")


class ChunkRetriever(BaseRetriever):
    """LangChain retriever over a Retriever: Documents with chunk metadata, score, dense_score.

        ChunkRetriever(retriever=Retriever(), k=2, mode="bm25").invoke(query)
        ChunkRetriever(retriever=Retriever()).invoke(query, k=1, filters={"part": "15"})

    The search options are fields, and a call's keyword arguments override them for that
    call. `search_kwargs={...}` (LangChain's VectorStoreRetriever spelling) fills the same
    fields. `mode` applies to similarity search only (MMR ranks by the dense cosine).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    retriever: Any = Field(description="The Retriever to search (chains.retrieval.Retriever).")
    search_type: Literal["similarity", "mmr"] = "similarity"
    k: int | None = Field(default=None, ge=0, description="Documents to return; None: RETRIEVAL_K.")
    mode: Literal["dense", "hybrid", "bm25"] | None = Field(
        default=None, description="Similarity search mode; None: RETRIEVAL_MODE."
    )
    filters: dict[str, Any] | None = Field(
        default=None, description=f"Metadata filters on {', '.join(FILTER_FIELDS)}."
    )
    score_threshold: float | None = Field(
        default=None, description="Least dense cosine a chunk needs; None: no threshold."
    )
    fetch_k: int | None = Field(
        default=None, ge=1, description="Candidates fetched before ranking."
    )
    lambda_mult: float = Field(
        default=0.5, ge=0.0, le=1.0, description="MMR: 1 relevance, 0 diversity."
    )

    @model_validator(mode="before")
    @classmethod
    def _unpack_search_kwargs(cls, data: Any) -> Any:
        if isinstance(data, dict) and "search_kwargs" in data:
            data = dict(data)
            data = {**(data.pop("search_kwargs") or {}), **data}
        return data

    @property
    def search_kwargs(self) -> dict[str, Any]:
        """The search options set on this retriever (the VectorStoreRetriever spelling)."""
        return {
            name: getattr(self, name) for name in SEARCH_OPTIONS if name in self.model_fields_set
        }

    def _options(self, overrides: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        unknown = set(overrides) - {*SEARCH_OPTIONS, "search_type"}
        if unknown:
            raise TypeError(
                f"Unknown search option(s) {sorted(unknown)}; use {['search_type', *SEARCH_OPTIONS]}"
            )
        merged = self.model_copy(update=overrides) if overrides else self
        search_type = merged.search_type
        if search_type not in ("similarity", "mmr"):
            raise ValueError(f"search_type must be 'similarity' or 'mmr', not {search_type!r}")
        k = merged.k
        if k is None:
            k = (getattr(self.retriever, "settings", None) or get_settings()).retrieval_k
        options: dict[str, Any] = {
            "k": k,
            "filters": merged.filters,
            "score_threshold": merged.score_threshold,
        }
        if search_type == "mmr":
            options["lambda_mult"] = merged.lambda_mult
            if merged.fetch_k is not None:
                options["fetch_k"] = merged.fetch_k
        else:
            options["mode"] = merged.mode
            options["fetch_k"] = merged.fetch_k
        return search_type, options

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        search_type, options = self._options(kwargs)
        if search_type == "mmr":
            hits = self.retriever.mmr(query, **options)
        else:
            hits = self.retriever.search(query, **options)
        return [hit.to_document() for hit in hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return await run_in_executor(
            None,
            self._get_relevant_documents,
            query,
            run_manager=run_manager.get_sync(),
            **kwargs,
        )
