"""`python -m finetune embeddings`: fine-tune the retrieval embedder on the documents' own Q&A.

1. The corpus is read and chunked the way `python -m ingest` stores it (`ingest.loaders`,
   `ingest.chunking.Chunker` with the base embedder's tokenizer and the chunk settings), and
   each chunk's `embed_text` (heading prefix + text: what ingestion embeds) is a candidate.
2. Pairs: the grounded questions of `finetune data from-docs` (`finetune.qa_gen`), each with
   the chunk its answer was taken from; optionally each also without its "under § N"
   reference; and the rows of a `--qa` file, each with the chunk that holds its answer
   (verbatim after whitespace normalisation, else the best answer-token recall >= 0.6).
3. Hard negatives are mined with the base embedder: the top-ranked chunks for the question
   that are not the positive, not of the positive's section (section-level retrieval counts
   those as hits) and do not contain the answer.
4. sentence-transformers' `SentenceTransformerTrainer` with `MultipleNegativesRankingLoss`
   (in-batch negatives plus the hard ones; no duplicate texts in a batch).

The output folder is a sentence-transformers model folder (`EMBEDDING_MODEL=<folder>` loads
it; the chunk signature includes that setting, so the next ingest re-embeds), with
`training_info.json` (base, data hashes, sources, pair counts, arguments, losses) and
`loss.png`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.data import DataError, DataIssue
from finetune.embedding_config import EmbeddingConfig

log = logging.getLogger(__name__)

MIN_ANSWER_RECALL = 0.6  # a --qa answer's tokens a chunk must hold when no chunk quotes it
MINING_DEPTH = 30  # hard negatives are taken from the base embedder's top this-many chunks


@dataclass
class CorpusChunk:
    id: str  # "<file name>#<chunk index>", as qa_gen's passages name their chunk
    source: str
    section: str | None
    text: str
    embed_text: str


@dataclass
class Pair:
    question: str
    answer: str
    chunk: int  # index into the corpus chunks
    origin: str  # generated | generated-no-reference | qa
    references: tuple[str, ...] = ()  # how a generated question names its source
    negatives: list[int] = field(default_factory=list)


@dataclass
class EmbeddingResult:
    output_dir: Path
    info: dict[str, Any]

    @property
    def train_loss(self) -> float | None:
        return self.info.get("train_loss")


def _normal(text: str) -> str:
    return " ".join(text.casefold().split())


_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


# Corpus ---------------------------------------------------------------------------------------


def _chunker(model, settings):
    from ingest.chunking import Chunker

    tokenizer = model.tokenizer
    window = min(model.max_seq_length or 512, tokenizer.model_max_length or 512)
    return Chunker(tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens, window)


_SECTION_REF = re.compile(r"\s*\b(?:under|in)\s+§+\s*[\d.]+[a-z]?(?:\([^)]*\))*")
_BARE_SECTION = re.compile(r"\s*§+\s*\d+\.\d+[a-z]?(?:\([^)]*\))*")


def without_reference(question: str, references: set[str]) -> str | None:
    """The question without "under § 15.247" / "in KDB 447498 D01 (...)" (None if unchanged)."""
    text = _BARE_SECTION.sub("", _SECTION_REF.sub("", question))
    for ref in sorted(references, key=len, reverse=True):
        text = text.replace(ref, "")
    text = " ".join(text.split()).replace(" ?", "?").replace(" ,", ",")
    if text == question or len(_words(text)) < 3:
        return None
    return text[0].upper() + text[1:]


def corpus_files(paths: list[str]) -> list[Path]:
    """The supported files under the paths; none: DataError."""
    from finetune.qa_gen import discover_files

    files = discover_files(paths)
    if not files:
        raise DataError(
            f"no documents under {', '.join(map(str, paths))}: give folders or files of a "
            "supported type (.txt, .md, .html, .xml, .pdf, .docx)"
        )
    return files


def read_corpus(
    paths: list[str], model, settings, progress: bool
) -> tuple[list[CorpusChunk], list[Pair], dict[str, Any]]:
    """The corpus chunks and the generated pairs (question -> the chunk of its answer)."""
    from tqdm.auto import tqdm

    from finetune import qa_gen
    from ingest.documents import SkipFile
    from ingest.loaders import load_file

    files = corpus_files(paths)
    chunker = _chunker(model, settings)
    chunks: list[CorpusChunk] = []
    pairs: list[Pair] = []
    report = qa_gen.GenerationReport(out=None)
    seen: dict = {}
    sources: dict[str, str] = {}
    skipped: list[str] = []
    for path in tqdm(files, desc="documents", unit="file", disable=not progress):
        try:
            loaded = load_file(path, path.read_bytes())
            doc, passages = qa_gen.document_passages(path, chunker)
        except SkipFile as error:
            skipped.append(f"{path}: {error}")
            continue
        sources[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        first = len(chunks)
        for index, chunk in enumerate(chunker.chunk(loaded)):
            chunks.append(
                CorpusChunk(
                    f"{path.name}#{index}", path.name, chunk.section, chunk.text, chunk.embed_text
                )
            )
        by_id = {c.id: first + i for i, c in enumerate(chunks[first:])}
        for passage in passages:
            before = len(report.pairs)
            qa_gen.pairs_from_passages(doc, [passage], seen, report)
            refs = (qa_gen._ref(passage, doc), qa_gen._ref(passage, doc, specific=True))
            target = by_id.get(passage.chunk_id)
            for pair in report.pairs[before:]:
                if target is not None:
                    pairs.append(Pair(pair.question, pair.answer, target, "generated", refs))
    if not chunks:
        raise DataError(f"no text in the documents under {', '.join(map(str, paths))}")
    info = {
        "files": len(sources),
        "skipped": skipped,
        "chunks": len(chunks),
        "generated_questions": len(report.pairs),
        "duplicate_questions_dropped": report.duplicates,
        "sources": sources,
    }
    return chunks, pairs, info


def add_reference_free(pairs: list[Pair]) -> list[Pair]:
    """For each generated pair, the same question without its reference (when it has one)."""
    extra: list[Pair] = []
    seen = {_normal(p.question) for p in pairs}
    for pair in pairs:
        if pair.origin != "generated":
            continue
        question = without_reference(pair.question, set(pair.references))
        if question and _normal(question) not in seen:
            seen.add(_normal(question))
            extra.append(Pair(question, pair.answer, pair.chunk, "generated-no-reference"))
    return extra


def read_qa(path: str | Path):
    """A --qa file's rows; a malformed row, an empty file: DataError naming the file:line."""
    from finetune.data import read_examples

    result = read_examples(path)  # an empty file or one with no usable row: DataError
    if result.errors:
        raise DataError(result.errors)
    return result


def qa_pairs(result, chunks: list[CorpusChunk]) -> tuple[list[Pair], dict[str, Any]]:
    """The rows of a --qa file, each with the chunk holding its answer (rows with none dropped)."""
    path = result.path
    normal_chunks = [_normal(c.text) for c in chunks]
    word_sets = [set(_words(c.embed_text)) for c in chunks]
    pairs: list[Pair] = []
    unmatched: list[str] = []
    for example in result.examples:
        answer = _normal(example.answer)
        target = next(
            (i for i, text in enumerate(normal_chunks) if answer and answer in text), None
        )
        if target is None:
            words = set(_words(example.answer))
            if words:
                recall, best = max(
                    (len(words & ws) / len(words), i) for i, ws in enumerate(word_sets)
                )
                target = best if recall >= MIN_ANSWER_RECALL else None
        if target is None:
            unmatched.append(example.question)
            continue
        pairs.append(Pair(example.question, example.answer, target, "qa"))
    if not pairs:
        raise DataError(
            DataIssue(
                str(path),
                None,
                "answer",
                f"none of the {len(result.examples)} answers is found in a corpus chunk "
                f"(verbatim or >= {MIN_ANSWER_RECALL:.0%} of its words): is --corpus the right folder?",
            )
        )
    for question in unmatched[:10]:
        log.warning("%s: no corpus chunk holds the answer of %r (row skipped)", path, question)
    info = {
        "path": str(path),
        "sha256": result.sha256,
        "rows": len(result.examples),
        "matched": len(pairs),
        "unmatched": len(unmatched),
    }
    return pairs, info


# Hard negatives ---------------------------------------------------------------------------------


def encode(model, texts: list[str], batch_size: int = 64, progress: bool = False):
    return model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_tensor=True,
        show_progress_bar=progress,
    )


def mine_hard_negatives(
    model, pairs: list[Pair], chunks: list[CorpusChunk], k: int, chunk_vectors, progress: bool
) -> None:
    """Set each pair's `negatives`: the base embedder's top chunks that are not a positive."""
    if k <= 0 or not pairs:
        return
    import torch

    questions = encode(model, [p.question for p in pairs], progress=progress)
    depth = min(MINING_DEPTH + k, len(chunks))
    top = torch.topk(questions @ chunk_vectors.T, depth, dim=1).indices.tolist()
    normal_chunks = [_normal(c.text) for c in chunks]
    for pair, ranked in zip(pairs, top, strict=True):
        positive = chunks[pair.chunk]
        answer = _normal(pair.answer)
        for index in ranked:
            chunk = chunks[index]
            if index == pair.chunk or (positive.section and chunk.section == positive.section):
                continue
            if chunk.source == positive.source and not positive.section and chunk.section is None:
                continue  # a document without sections: section-level metrics match by file
            if answer and answer in normal_chunks[index]:
                continue
            pair.negatives.append(index)
            if len(pair.negatives) == k:
                break


def positive_ranks(
    model, pairs: list[Pair], chunks: list[CorpusChunk], chunk_vectors=None
) -> list[int]:
    """1-based rank of each pair's positive chunk among all chunks (by cosine)."""
    if chunk_vectors is None:
        chunk_vectors = encode(model, [c.embed_text for c in chunks])
    questions = encode(model, [p.question for p in pairs])
    scores = questions @ chunk_vectors.T
    ranks = []
    for row, pair in zip(scores, pairs, strict=True):
        ranks.append(int((row > row[pair.chunk]).sum().item()) + 1)
    return ranks


# Training ---------------------------------------------------------------------------------------


def _file_digest(paths: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(paths, sort_keys=True).encode()).hexdigest()


def train_embeddings(config: EmbeddingConfig) -> EmbeddingResult:
    config.validate()
    started = time.time()
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    from core.models import resolve_embedding_model
    from core.settings import get_settings
    from finetune.plots import save_loss_curve

    corpus_files(config.corpus)  # no documents, a bad --qa row: fail before any model loads
    qa = read_qa(config.qa) if config.qa else None
    settings = get_settings()
    base = resolve_embedding_model(config.base)
    out = Path(config.out).expanduser()
    log.info("base embedder: %s", base)
    model = SentenceTransformer(base, device="cuda" if torch.cuda.is_available() else "cpu")

    chunks, generated, corpus_info = read_corpus(config.corpus, model, settings, config.progress)
    pairs: list[Pair] = list(generated) if config.generated else []
    if config.generated and config.reference_free:
        pairs += add_reference_free(generated)
    qa_info = None
    if qa is not None:
        user_pairs, qa_info = qa_pairs(qa, chunks)
        pairs += user_pairs
    if not pairs:
        raise DataError(
            f"no training pairs: the documents under {', '.join(config.corpus)} gave no "
            "question (limits, definitions, obligations, tables); give --qa with your own rows"
        )
    available = len(pairs)
    if config.max_pairs and len(pairs) > config.max_pairs:
        pairs = random.Random(config.seed).sample(pairs, config.max_pairs)
    log.info(
        "%d chunks from %d file(s); %d training pairs (%s)",
        len(chunks),
        corpus_info["files"],
        len(pairs),
        ", ".join(f"{k} {v}" for k, v in sorted(Counter(p.origin for p in pairs).items())),
    )

    chunk_vectors = encode(model, [c.embed_text for c in chunks], progress=config.progress)
    ranks_before = positive_ranks(model, pairs, chunks, chunk_vectors)
    mine_hard_negatives(model, pairs, chunks, config.hard_negatives, chunk_vectors, config.progress)
    k = min((len(p.negatives) for p in pairs), default=0) if config.hard_negatives else 0
    columns: dict[str, list[str]] = {
        "anchor": [p.question for p in pairs],
        "positive": [chunks[p.chunk].embed_text for p in pairs],
    }
    for n in range(k):  # every row needs the same columns: the fewest negatives any pair got
        columns[f"negative_{n + 1}"] = [chunks[p.negatives[n]].embed_text for p in pairs]
    dataset = Dataset.from_dict(columns)

    batch_size = min(config.batch_size, len(pairs))
    work = out / "checkpoints"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=0.1,  # a float: the share of the steps (transformers 5)
        seed=config.seed,
        data_seed=config.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=not config.progress,
        use_cpu=not torch.cuda.is_available(),
        dataloader_drop_last=False,
    )
    loss = MultipleNegativesRankingLoss(model)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    output = trainer.train()
    history = [e for e in trainer.state.log_history if "loss" in e]
    losses = [{"step": int(e["step"]), "loss": float(e["loss"])} for e in history]

    model.eval()
    ranks_after = positive_ranks(model, pairs, chunks)
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    curve = save_loss_curve(trainer.state.log_history, out / "loss.png", "embedding fine-tuning")

    def rank_summary(ranks: list[int]) -> dict[str, float]:
        return {
            "hit@1": sum(r == 1 for r in ranks) / len(ranks),
            "hit@4": sum(r <= 4 for r in ranks) / len(ranks),
            "mrr": sum(1 / r for r in ranks) / len(ranks),
        }

    info = {
        "kind": "sentence-transformers embedder fine-tuned by `python -m finetune embeddings`",
        "base": base,
        "base_setting": config.base if config.base is not None else settings.embedding_model,
        "arguments": config.to_dict(),
        "chunking": {
            "chunk_tokens": settings.chunk_tokens,
            "chunk_overlap_tokens": settings.chunk_overlap_tokens,
        },
        "corpus": {**corpus_info, "sha256": _file_digest(corpus_info["sources"])},
        "qa": qa_info,
        "pairs": {
            "available": available,
            "used": len(pairs),
            "by_origin": dict(Counter(p.origin for p in pairs)),
            "hard_negatives_per_pair": k,
        },
        "loss": "MultipleNegativesRankingLoss (in-batch + hard negatives, no duplicates per batch)",
        "train_loss": float(output.training_loss),
        "first_loss": losses[0]["loss"] if losses else None,
        "last_loss": losses[-1]["loss"] if losses else None,
        "losses": losses,
        "steps": int(output.global_step),
        "training_pairs_positive_rank": {
            "before": rank_summary(ranks_before),
            "after": rank_summary(ranks_after),
        },
        "loss_curve": str(curve) if curve else None,
        "seconds": round(time.time() - started, 1),
        "device": str(model.device),
        "use_it": f"EMBEDDING_MODEL={out.resolve()}  (the next ingest re-embeds)",
    }
    (out / "training_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return EmbeddingResult(out, info)
