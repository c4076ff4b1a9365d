"""What the model is trained on: the rendered chat template, with the loss tokens marked."""

from __future__ import annotations

from finetune.data import Example, to_training_record, tokenize_record

LOSS_START, LOSS_END = "[[", "]]"
_GREEN, _RESET = "\x1b[1;32m", "\x1b[0m"


def loss_segments(tokenizer, token_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """Consecutive runs of prompt tokens (no loss) and answer tokens (loss), decoded verbatim."""
    segments: list[tuple[str, bool]] = []
    start = 0
    for position in range(1, len(token_ids) + 1):
        if position == len(token_ids) or (labels[position] != -100) != (labels[start] != -100):
            text = tokenizer.decode(token_ids[start:position], skip_special_tokens=False)
            segments.append((text, labels[start] != -100))
            start = position
    return segments


def render_preview(
    tokenizer,
    example: Example,
    system_prompts: dict[str, str] | None = None,
    max_length: int | None = None,
    color: bool = False,
) -> str:
    record = to_training_record(example, system_prompts)
    full = tokenize_record(tokenizer, record)
    kept = tokenize_record(tokenizer, record, max_length)
    open_mark, close_mark = (_GREEN, _RESET) if color else (LOSS_START, LOSS_END)
    body = "".join(
        f"{open_mark}{text}{close_mark}" if is_loss else text
        for text, is_loss in loss_segments(tokenizer, kept["input_ids"], kept["labels"])
    )
    n_loss = sum(1 for label in kept["labels"] if label != -100)
    n_tokens = len(kept["input_ids"])
    legend = "green" if color else f"{LOSS_START}...{LOSS_END}"
    header = f"── {example.source or 'example'}  category={example.category} difficulty={example.difficulty or '-'} ──"
    footer = (
        f"{n_tokens} tokens: {n_tokens - n_loss} prompt tokens carry no loss (label -100), "
        f"{n_loss} answer tokens carry the loss (marked {legend})."
    )
    if len(full["input_ids"]) > n_tokens:
        footer += (
            f"\nTRUNCATED at max_length={max_length}: {len(full['input_ids']) - n_tokens} tokens "
            "(the end of the answer) are not trained on."
        )
    return f"{header}\n{body}\n{footer}"
