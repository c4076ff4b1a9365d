"""Merge a LoRA adapter into its base model, save it, and prove the merge changed nothing.

The base is loaded in full precision (fp32) for the merge, never quantized: merging into a 4-bit
base re-quantizes W + BA, which rounds most of the small LoRA update away (the classic QLoRA merge
bug) and yields a model that answers differently from the adapter. An adapter trained on a 4-bit
base (QLoRA) is therefore merged into the original full-precision weights; the parity check
compares the merged model with the adapter applied to that same full-precision base.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from core.adapters import adapter_base_model, adapter_dir, prompt_template, read_training_info
from core.modeling import GREEDY
from finetune.data import system_prompt_for

log = logging.getLogger(__name__)

PROBES = [
    "What does Part 15 of the FCC rules cover?",
    "What is an intentional radiator?",
    "Who can certify radio equipment for the U.S. market?",
    "What is the purpose of an FCC ID?",
    "What is specific absorption rate (SAR)?",
]
PROBE_TOKENS = 16
MERGE_INFO = "merge_info.json"


class MergeParityError(RuntimeError):
    """The merged model's greedy output differs from the adapter's."""


# Two fp32 computations of the same function (x·W + x·A·B·s vs x·(W + B·A·s)) differ by ~1e-5 in
# the logits; a greedy step whose two best logits are closer than this may flip either way, and
# such a flip is not a merge error. A broken merge moves logits by far more.
TIE_MARGIN = 1e-3


@dataclass
class ProbeResult:
    prompt: str
    expected: str
    got: str
    equal: bool
    expected_ids: list[int] = field(default_factory=list)
    near_tie_at: int | None = (
        None  # the first differing token, when the adapter's choice there was a near-tie
    )


@dataclass
class ParityReport:
    probes: list[ProbeResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.probes) and all(p.equal for p in self.probes)

    def format(self) -> str:
        lines = []
        for probe in self.probes:
            mark = "same" if probe.equal else "DIFFERENT"
            if probe.near_tie_at is not None:
                mark = f"same up to a near-tie at token {probe.near_tie_at}"
            lines.append(f"  [{mark}] {probe.prompt}")
            if not probe.equal or probe.near_tie_at is not None:
                lines.append(f"      adapter: {probe.expected!r}")
                lines.append(f"      merged:  {probe.got!r}")
        return "\n".join(lines)


def probe_conversations(prompts: list[str]) -> list[list[dict[str, str]]]:
    return [
        [
            {"role": "system", "content": system_prompt_for(None)},
            {"role": "user", "content": prompt},
        ]
        for prompt in prompts
    ]


@torch.inference_mode()
def greedy_probes(model, tokenizer, prompts: list[str], max_new_tokens: int = PROBE_TOKENS):
    """Greedy token ids for each probe, with the margin between the two best logits at each step."""
    device = next(model.parameters()).device
    results = []
    for conversation in probe_conversations(prompts):
        inputs = tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(device)
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            **GREEDY,
            pad_token_id=tokenizer.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        ids = output.sequences[0, inputs["input_ids"].shape[1] :].tolist()
        margins = [float(s[0].float().topk(2).values.diff().abs()) for s in output.scores]
        results.append((ids, margins))
    return results


def check_parity(
    expected: list[tuple[list[int], list[float]]],
    model,
    tokenizer,
    prompts: list[str] = PROBES,
    max_new_tokens: int = PROBE_TOKENS,
) -> ParityReport:
    """Greedy output of `model` on the probes, token for token against the adapter's (ids, margins)."""
    got = greedy_probes(model, tokenizer, prompts, max_new_tokens)
    probes = []
    for prompt, (expected_ids, margins), (got_ids, _) in zip(prompts, expected, got, strict=True):
        equal, tie_at = expected_ids == got_ids, None
        if not equal:
            first = next(
                (i for i, (a, b) in enumerate(zip(expected_ids, got_ids, strict=False)) if a != b),
                min(len(expected_ids), len(got_ids)),
            )
            if first < len(margins) and margins[first] < TIE_MARGIN:
                equal, tie_at = True, first
        probes.append(
            ProbeResult(
                prompt,
                tokenizer.decode(expected_ids, skip_special_tokens=True),
                tokenizer.decode(got_ids, skip_special_tokens=True),
                equal,
                expected_ids,
                tie_at,
            )
        )
    return ParityReport(probes)


@dataclass
class MergeResult:
    output_dir: Path
    base_model: str
    parity: ParityReport

    def to_dict(self) -> dict:
        return {
            "output_dir": str(self.output_dir),
            "base_model": self.base_model,
            "parity_ok": self.parity.ok,
            "probes": [asdict(p) for p in self.parity.probes],
        }


def merge_adapter(
    adapter: str | Path,
    out_dir: str | Path,
    base_model: str | None = None,
    quantization: str = "none",
    device: str = "cpu",
    prompts: list[str] = PROBES,
    max_new_tokens: int = PROBE_TOKENS,
) -> MergeResult:
    """Merge in fp32, save weights + tokenizer, reload from disk and check greedy parity.

    Raises MergeParityError (leaving the saved folder for inspection) when the outputs differ."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from core.modeling import load_base_model

    if quantization != "none":
        raise ValueError(
            f"Refusing to merge into a {quantization} base: quantizing the merged weights rounds the "
            "LoRA update away, so the merged model would not answer like the adapter. The merge "
            "always loads the base in full precision."
        )
    folder = adapter_dir(adapter)
    out = Path(out_dir).expanduser()
    if out.resolve() == folder.resolve():
        raise ValueError("--out must be another folder than the adapter's.")
    info = read_training_info(folder)
    trained_on = info.get("quantization")
    base = load_base_model(
        base_model or adapter_base_model(folder), quantization="none", device=device
    )
    base.model.to(torch.float32)
    log.info(
        "Loaded the base %s in full precision (fp32) on %s for the merge%s.",
        base.path,
        device,
        f"; the adapter was trained on a {trained_on} base (QLoRA), its update is merged into the "
        "original full-precision weights"
        if trained_on in {"4bit", "8bit"}
        else "",
    )
    tokenizer = base.tokenizer  # with the template policy of serving and `finetune test`
    tokenizer.chat_template = prompt_template(folder, tokenizer.chat_template)
    model = PeftModel.from_pretrained(base.model, str(folder))
    model.eval()
    expected = greedy_probes(model, tokenizer, prompts, max_new_tokens)
    base_path = base.path
    merged = model.merge_and_unload()
    if out.exists():
        shutil.rmtree(out)
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    del model, merged, base
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).to(device)
    reloaded.eval()
    parity = check_parity(expected, reloaded, tokenizer, prompts, max_new_tokens)
    result = MergeResult(out, base_path, parity)
    (out / MERGE_INFO).write_text(
        json.dumps(
            {
                **result.to_dict(),
                "adapter": str(folder),
                "trained_on": trained_on,
                "merged_dtype": "float32",
                "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                "training_info": info,
            },
            indent=2,
            default=str,
        )
    )
    if not parity.ok:
        raise MergeParityError(
            f"The merged model in {out} does not reproduce the adapter's greedy output:\n{parity.format()}"
        )
    return result
