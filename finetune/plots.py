"""The loss curve of a run as a PNG (matplotlib's Agg canvas, no pyplot: safe in threads)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def loss_points(log_history: list[dict]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    train = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    evaluation = [(int(e["step"]), float(e["eval_loss"])) for e in log_history if "eval_loss" in e]
    return train, evaluation


def save_loss_curve(log_history: list[dict], path: Path, title: str = "") -> Path | None:
    train, evaluation = loss_points(log_history)
    if not train and not evaluation:
        return None
    figure = Figure(figsize=(7, 4), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    if train:
        axes.plot(*zip(*train, strict=True), label="train loss", color="tab:blue")
    if evaluation:
        axes.plot(*zip(*evaluation, strict=True), "o-", label="eval loss", color="tab:orange")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (answer tokens)")
    axes.set_title(title or "training loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
