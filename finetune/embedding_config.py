"""`EmbeddingConfig`: the options of `python -m finetune embeddings`, every option once.

The same pattern as `finetune.config.TrainConfig`: each field carries its help text (and
bounds) in `metadata`; the command line (`finetune.cli.add_embeddings_parser`) generates one
flag per field from it, and `training_info.json`'s "arguments" is `to_dict()`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from finetune.config import Option, check_bounds


@dataclass
class EmbeddingConfig:
    corpus: list[str] | None = field(
        default=None,
        metadata={
            "help": "Document files or folders (recursively) to train on: read and chunked the "
            "way `python -m ingest` stores them; questions are generated from them "
            "(`finetune data from-docs`) and each is paired with the chunk holding its answer.",
            "cli": {"metavar": "PATH", "required": True},
        },
    )
    out: str | None = field(
        default=None,
        metadata={
            "help": "Output folder: a sentence-transformers model (EMBEDDING_MODEL=<folder>), "
            "training_info.json and loss.png.",
            "cli": {"metavar": "FOLDER", "required": True},
        },
    )
    qa: str | None = field(
        default=None,
        metadata={
            "help": "Also train on your own question/answer rows (CSV, JSONL or JSON, as "
            "`finetune train --data`); each answer is matched to the corpus chunk that holds it.",
            "cli": {"metavar": "FILE"},
        },
    )
    generated: bool = field(
        default=True,
        metadata={"help": "Train on questions generated from the corpus documents."},
    )
    reference_free: bool = field(
        default=True,
        metadata={
            "help": "Also train on each generated question with its reference ('under § 15.247', "
            "'in KDB 447498 D01') removed: users seldom name the section."
        },
    )
    base: str | None = field(
        default=None,
        metadata={
            "help": "Embedder to start from: a folder or Hugging Face id (default: the "
            "EMBEDDING_MODEL setting, empty = the bundled all-MiniLM-L6-v2)."
        },
    )
    epochs: float = field(default=1.0, metadata={"help": "Training epochs.", "gt": 0})
    batch_size: int = field(
        default=16,
        metadata={
            "help": "Pairs per batch; the other pairs' chunks are in-batch negatives.",
            "ge": 2,
        },
    )
    learning_rate: float = field(default=3e-5, metadata={"help": "Peak learning rate.", "gt": 0})
    hard_negatives: int = field(
        default=1,
        metadata={
            "help": "Hard negatives per pair: the chunks the base embedder ranks highest for the "
            "question that are neither the positive nor of its section nor hold the answer.",
            "ge": 0,
        },
    )
    max_pairs: int | None = field(
        default=None,
        metadata={"help": "Train on at most this many pairs (a seeded sample).", "ge": 1},
    )
    seed: int = field(default=42, metadata={"help": "Seed of the sample and the data order."})
    progress: bool = field(default=True, metadata={"help": "Progress bars."})

    def validate(self) -> None:
        if not self.corpus:
            raise ValueError("Give --corpus: the document files or folders to train on.")
        if not self.out or not str(self.out).strip():
            raise ValueError("Give --out: the folder to write the model to.")
        if not self.generated and not self.qa:
            raise ValueError("--no-generated needs --qa: there would be no training pairs.")
        for option in embedding_options():
            value = getattr(self, option.name)
            if value is not None:
                check_bounds(option, value, label="--" + option.name.replace("_", "-"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.cache
def embedding_options() -> tuple[Option, ...]:
    hints = get_type_hints(EmbeddingConfig)
    return tuple(Option(f, hints[f.name]) for f in dataclasses.fields(EmbeddingConfig))
