#!/usr/bin/env bash
# Rebuild data/adapters/smollm2-fcc-rag: the training data (CPU: Qdrant + MiniLM), then QLoRA
# on a GPU. Only repository data: the sample corpus data/samples, the Q&A generated from it and
# data/qa/fcc_qa.csv. Never the eCFR Parts 97 and 80 (data/corpus/ecfr, the default corpus, the
# same text as ../shared/fcc-corpus: the held-out evaluation corpus).
#
#   bash data/adapters/smollm2-fcc-rag/reproduce.sh            # data, then training
#   bash data/adapters/smollm2-fcc-rag/reproduce.sh --data     # data only (CPU)
#   bash data/adapters/smollm2-fcc-rag/reproduce.sh --train    # training only (GPU)
set -euo pipefail
cd "$(dirname "$0")/../../.."
A=data/adapters/smollm2-fcc-rag
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE
step=${1:-all}
work=${WORK:-/tmp/smollm2-fcc-rag}
mkdir -p "$work"

if [ "$step" != "--train" ]; then
  # A private store: the app's own index (data/qdrant) is left alone.
  export QDRANT_PATH=${QDRANT_PATH:-$work/qdrant}
  $PY -m ingest data/samples --collection adapter_corpus
  $PY -m finetune data from-docs data/samples --out $A/data/qa_from_docs.csv --no-progress
  for seed in 1 2; do  # two draws: other passage positions and abstentions per question
    $PY -m finetune data from-corpus --qa $A/data/qa_from_docs.csv --collection adapter_corpus \
      --seed $seed --out "$work/docs_$seed.jsonl"
    $PY -m finetune data from-corpus --qa data/qa/fcc_qa.csv --collection adapter_corpus \
      --seed $seed --out "$work/qa_$seed.jsonl"
  done
  cat "$work/docs_1.jsonl" "$work/qa_1.jsonl" "$work/docs_2.jsonl" "$work/qa_2.jsonl" \
    > $A/data/train.jsonl
  sha256sum $A/data/train.jsonl
fi

if [ "$step" != "--data" ]; then
  # QLoRA: the base in 4-bit NF4 (double quantization), LoRA r 8 on every linear layer.
  $PY -m finetune train --data $A/data/train.jsonl --preset fast --epochs 3 --batch-size 8 \
    --lora-r 8 --lora-alpha 16 --target-modules all-linear --max-length 1024 \
    --quantization 4bit --seed 42 --no-progress --output-dir "$work/run"
  cp "$work"/run/final_model/* $A/
  cp "$work/run/loss_curve.png" $A/
  # Where the training data came from, with hashes, beside the data hash training recorded.
  $PY - "$A" <<'PY'
import hashlib, json, sys
from pathlib import Path
folder = Path(sys.argv[1])
digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
info = json.loads((folder / "training_info.json").read_text())
info["data_sources"] = {
    "train_jsonl": {"path": str(folder / "data/train.jsonl"), "sha256": digest(folder / "data/train.jsonl")},
    "generated_qa": {"path": str(folder / "data/qa_from_docs.csv"), "sha256": digest(folder / "data/qa_from_docs.csv"),
                     "made_by": "python -m finetune data from-docs data/samples"},
    "written_qa": {"path": "data/qa/fcc_qa.csv", "sha256": digest(Path("data/qa/fcc_qa.csv"))},
    "corpus": {str(p): digest(p) for p in sorted(Path("data/samples").iterdir()) if p.is_file()},
    "records": "finetune data from-corpus (seeds 1, 2) over both Q&A files, chains.prompts.build_rag_messages",
    "held_out_never_used": "../shared/fcc-corpus (= data/corpus/ecfr)",
}
(folder / "training_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False))
PY
fi
