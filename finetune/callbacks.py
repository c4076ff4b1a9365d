"""Trainer callbacks: a progress hook for background jobs and a progress bar that shows the loss."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback

log = logging.getLogger(__name__)

ProgressHook = Callable[[dict], None]


class ProgressReporter(TrainerCallback):
    """Calls `on_progress(dict(step, total, loss, eta_s, elapsed_s, epoch, eval_loss, phase))` after every
    optimizer step and every evaluation. An exception raised by the hook stops training."""

    def __init__(self, on_progress: ProgressHook):
        self.on_progress = on_progress
        self.loss: float | None = None
        self.eval_loss: float | None = None
        self._started = 0.0
        self._first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = time.monotonic()
        self._first_step = state.global_step  # not 0 when resuming

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.loss = float(logs["loss"])
            self._emit(state, "train")

    def on_step_end(self, args, state, control, **kwargs):
        # A step that logs reports from on_log (which runs right after), with its fresh loss.
        if not control.should_log:
            self._emit(state, "train")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            self.eval_loss = float(metrics["eval_loss"])
        self._emit(state, "eval")

    def _emit(self, state, phase: str) -> None:
        if not state.is_world_process_zero:  # one report per run, from rank 0
            return
        done = state.global_step - self._first_step
        elapsed = time.monotonic() - self._started
        eta = elapsed / done * (state.max_steps - state.global_step) if done > 0 else None
        self.on_progress(
            {
                "step": state.global_step,
                "total": state.max_steps,
                "loss": self.loss,
                "eta_s": round(eta, 1) if eta is not None else None,
                "elapsed_s": round(elapsed, 3),  # since training began: step times for benches
                "epoch": round(state.epoch or 0.0, 3),
                "eval_loss": self.eval_loss,
                "phase": phase,
            }
        )


def progress_file_writer(path: str | Path) -> ProgressHook:
    """A hook that appends each report to `path` as one JSON line, flushed at once, so the
    process that launched the run (the API's training job) can follow it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(progress: dict) -> None:
        with target.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(progress) + "\n")

    return write


class LossProgressBar(TrainerCallback):
    """A tqdm bar over optimizer steps with the latest loss, learning rate and epoch; eval lines below."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(
            total=state.max_steps, initial=state.global_step, desc="training", dynamic_ncols=True
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if self.bar is None:
            return
        if "loss" in logs:
            self.bar.set_postfix(
                loss=f"{logs['loss']:.4f}",
                lr=f"{logs.get('learning_rate', 0):.2e}",
                epoch=f"{state.epoch or 0:.2f}",
            )
        if "eval_loss" in logs:
            self.bar.write(
                f"epoch {state.epoch or 0:.2f} step {state.global_step}: eval_loss {logs['eval_loss']:.4f}"
            )

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LogLines(TrainerCallback):
    """Without a bar: the loss through logging (background jobs, logs)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        shown = {
            k: round(v, 4) if isinstance(v, float) else v for k, v in logs.items() if "loss" in k
        }
        if shown:
            log.info(
                "step %d/%d epoch %.2f %s",
                state.global_step,
                state.max_steps,
                state.epoch or 0,
                shown,
            )
