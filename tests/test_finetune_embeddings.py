"""`python -m finetune embeddings`: a real (small) fine-tuning run of the embedder on CPU.

Three documents of data/samples, 1 epoch, batch 4, at most 16 pairs: well under two minutes on
two cores. The output folder must load as EMBEDDING_MODEL does (a sentence-transformers
folder), carry training_info.json, and the training questions' positive chunks must rank at
least as high as before (or the loss fell). A malformed --qa row is one line naming its line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from finetune.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("part15_definitions.txt", "part15_conducted_limits.txt", "part15_general_conditions.md")


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for name in DOCS:
        shutil.copy(ROOT / "data" / "samples" / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def trained(small_corpus, tmp_path_factory):
    from finetune.embedding_config import EmbeddingConfig
    from finetune.embeddings import train_embeddings

    out = tmp_path_factory.mktemp("embedder") / "model"
    config = EmbeddingConfig(
        corpus=[str(small_corpus)],
        out=str(out),
        epochs=1,
        batch_size=4,
        max_pairs=16,
        hard_negatives=1,
        learning_rate=5e-5,
        progress=False,
    )
    return train_embeddings(config)


def test_the_output_loads_as_embedding_model_and_says_how_it_was_made(trained):
    from sentence_transformers import SentenceTransformer

    from core.models import resolve_embedding_model

    folder = trained.output_dir
    assert resolve_embedding_model(str(folder)) == str(folder)  # EMBEDDING_MODEL=<folder>
    model = SentenceTransformer(resolve_embedding_model(str(folder)), device="cpu")
    vectors = model.encode(["hand-held portable device"], normalize_embeddings=True)
    assert vectors.shape == (1, 384)

    info = json.loads((folder / "training_info.json").read_text())
    assert info["base"].endswith("model")  # the bundled all-MiniLM-L6-v2 folder
    assert info["pairs"]["used"] == 16 and info["pairs"]["hard_negatives_per_pair"] == 1
    assert set(info["corpus"]["sources"]) == {
        str(Path(trained.info["arguments"]["corpus"][0]) / n) for n in DOCS
    }
    assert all(len(digest) == 64 for digest in info["corpus"]["sources"].values())
    assert info["losses"] and info["steps"] >= 4 and info["train_loss"] > 0
    assert info["arguments"]["batch_size"] == 4
    assert (folder / "loss.png").exists()
    assert not (folder / "checkpoints").exists()


def test_training_ranks_the_positive_chunks_at_least_as_high(trained):
    info = trained.info
    before = info["training_pairs_positive_rank"]["before"]
    after = info["training_pairs_positive_rank"]["after"]
    assert after["mrr"] >= before["mrr"] or info["last_loss"] < info["first_loss"], info


def test_reference_free_questions():
    from finetune.embeddings import without_reference

    assert (
        without_reference("What is the maximum peak output power under § 15.247?", set())
        == "What is the maximum peak output power?"
    )
    assert (
        without_reference(
            "Who must label the device in KDB 784748 D01 (labelling)?",
            {"in KDB 784748 D01 (labelling)"},
        )
        == "Who must label the device?"
    )
    assert without_reference("What is a digital device?", set()) is None


def test_a_malformed_qa_row_is_one_line_naming_its_line(small_corpus, tmp_path, capsys):
    bad = tmp_path / "qa.csv"
    bad.write_text(
        "question,answer\n"
        "What is a digital device?,An unintentional radiator that uses digital techniques.\n"
        "What is the limit?\n"
    )
    argv = ["embeddings", "--corpus", str(small_corpus), "--qa", str(bad), "--out"]
    assert main([*argv, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert f"{bad}:3" in err
    assert not (tmp_path / "out").exists()

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert (
        main(["embeddings", "--corpus", str(small_corpus), "--qa", str(empty), "--out", "x"]) == 2
    )
    assert f"{empty}:1" in capsys.readouterr().err


def test_no_documents_is_a_user_error(tmp_path, capsys):
    (tmp_path / "notes.bin").write_bytes(b"\0")
    assert main(["embeddings", "--corpus", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no documents under" in capsys.readouterr().err
