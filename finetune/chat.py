"""`python -m finetune chat`: a plain terminal chat with the base model plus an adapter (no RAG).

Commands: `exit` / `quit` / EOF end; `/reset` clears the history; `/base` and `/adapter` switch
the adapter off and on to compare answers.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import TextIO

import torch
from transformers.generation.streamers import TextStreamer

from core.modeling import GREEDY
from finetune.data import system_prompt_for
from finetune.inference import AdapterModel


class _StreamTo(TextStreamer):
    def __init__(self, tokenizer, out: TextIO):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.out = out

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.out.write(text + ("\n" if stream_end else ""))
        self.out.flush()


def chat_loop(
    loaded: AdapterModel,
    system_prompt: str | None = None,
    max_new_tokens: int = 256,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> int:
    system = system_prompt or system_prompt_for(
        None, (loaded.info.get("arguments") or {}).get("system_prompts")
    )
    history: list[dict[str, str]] = []
    use_adapter = loaded.has_adapter
    name = loaded.adapter_path.name if loaded.adapter_path else "base model"
    stdout.write(
        f"Chatting with {loaded.base.path} + {name}. `exit` ends, /reset, /base, /adapter.\n"
    )
    tokenizer, model = loaded.tokenizer, loaded.model
    device = next(model.parameters()).device
    while True:
        stdout.write("you> ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            stdout.write("\n")
            return 0
        text = line.strip()
        if text.lower() in {"exit", "quit"}:
            return 0
        if not text:
            continue
        if text == "/reset":
            history.clear()
            stdout.write("(history cleared)\n")
            continue
        if text in {"/base", "/adapter"}:
            use_adapter = text == "/adapter" and loaded.has_adapter
            stdout.write(f"(adapter {'on' if use_adapter else 'off'})\n")
            continue
        history.append({"role": "user", "content": text})
        messages = [{"role": "system", "content": system}, *history]
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        stdout.write("assistant> ")
        streamer = _StreamTo(tokenizer, stdout)
        with torch.inference_mode():
            context = (
                loaded.model.disable_adapter()
                if loaded.has_adapter and not use_adapter
                else nullcontext()
            )
            with context:
                output = model.generate(
                    **ids.to(device),
                    max_new_tokens=max_new_tokens,
                    **GREEDY,
                    pad_token_id=tokenizer.pad_token_id,
                    streamer=streamer,
                )
        answer = tokenizer.decode(
            output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True
        ).strip()
        history.append({"role": "assistant", "content": answer})
