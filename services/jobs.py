"""Training jobs run in a background thread, one at a time, reporting progress.

`POST /api/chat/qlora/train` starts one (202 + job id); `GET .../train/{job_id}` polls it.
The job writes its conversations as chat JSONL next to the adapter, then calls
`finetune.train.train(config, on_progress=...)`. When it succeeds the adapter folder
(`final_model_path`) can be hot-swapped into the running chat with `load_trained`.

The request's options are `finetune.config.TrainConfig`'s fields (`request_options()`, from
which `api.schemas.TrainRequest` is built), all but those the server sets itself
(`SERVER_CONTROLLED`). Every job is built from its own request only: nothing set by another
endpoint carries over.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finetune.config import Option, TrainConfig, train_options

log = logging.getLogger(__name__)


class JobConflictError(RuntimeError):
    """A training job is already running."""


class UnknownJobError(KeyError):
    pass


class InvalidTrainingRequestError(ValueError):
    """The training options do not make a valid TrainConfig."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class TrainJob:
    job_id: str
    output_dir: str
    state: str = "queued"  # queued | running | succeeded | failed
    step: int = 0
    total: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    epoch: float | None = None
    final_model_path: str | None = None
    train_loss: float | None = None
    error: str | None = None
    created_at: str = field(default_factory=_now)
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


# TrainConfig fields a request cannot set: the data (the request's conversations, written to a
# file), category/difficulty filters (those conversations carry none), resuming from a server
# folder, and the terminal progress bar. output_dir is the request's, checked by services.paths.
SERVER_CONTROLLED = frozenset({"data", "categories", "difficulties", "resume", "progress_bar"})


def request_options() -> list[Option]:
    """The TrainConfig fields a training request carries (`api.schemas.TrainRequest`)."""
    return [option for option in train_options() if option.name not in SERVER_CONTROLLED]


def training_option_names() -> frozenset[str]:
    """Every TrainConfig field name (what `POST /api/chat/qlora/load` refuses to take)."""
    return frozenset(option.name for option in train_options())


def write_conversations(conversations: list[tuple[str, str]], path: Path) -> Path:
    """Chat-format JSONL (`messages`), the format `finetune.data.load_examples` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for prompt, response in conversations:
            record = {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": response},
                ]
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def build_config(data_path: Path, output_dir: Path, params: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a request's options (TrainConfig field names; LoRA options included)
    and the server-controlled values."""
    controlled = sorted(set(params) & SERVER_CONTROLLED)
    if controlled:
        raise ValueError(f"{controlled[0]!r} is set by the server, not by a training request.")
    values = {
        **params,
        "data": str(data_path),
        "output_dir": str(output_dir),
        "progress_bar": False,
    }
    config = TrainConfig.from_dict(values)
    config.validate()
    return config


class TrainingJobs:
    def __init__(self):
        self._jobs: dict[str, TrainJob] = {}
        self._lock = threading.Lock()

    def get(self, job_id: str) -> TrainJob:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise UnknownJobError(job_id) from None

    def latest(self) -> TrainJob | None:
        return next(reversed(self._jobs.values()), None) if self._jobs else None

    def running(self) -> TrainJob | None:
        return next((job for job in self._jobs.values() if job.active), None)

    def start(
        self, conversations: list[tuple[str, str]], output_dir: Path, params: dict[str, Any]
    ) -> TrainJob:
        with self._lock:
            if (current := self.running()) is not None:
                raise JobConflictError(
                    f"Training job {current.job_id} is still {current.state}; wait for it "
                    f"(GET /api/chat/qlora/train/{current.job_id}) before starting another."
                )
            data_path = write_conversations(conversations, output_dir / "train_data.jsonl")
            try:
                config = build_config(data_path, output_dir, params)
            except ValueError as error:
                raise InvalidTrainingRequestError(str(error)) from error
            job = TrainJob(job_id=uuid.uuid4().hex[:12], output_dir=str(output_dir))
            self._jobs[job.job_id] = job
        thread = threading.Thread(
            target=self._run, args=(job, config), name=f"train-{job.job_id}", daemon=True
        )
        thread.start()
        return job

    def _run(self, job: TrainJob, config) -> None:
        from finetune.train import train

        job.state = "running"
        started = time.monotonic()

        def on_progress(progress: dict[str, Any]) -> None:
            job.step = int(progress.get("step") or job.step)
            job.total = progress.get("total") or job.total
            if progress.get("loss") is not None:
                job.loss = float(progress["loss"])
            job.eta_s = progress.get("eta_s")
            job.epoch = progress.get("epoch")

        try:
            result = train(config, on_progress=on_progress)
            job.final_model_path = str(result.final_model_path)
            job.train_loss = result.train_loss
            job.step = job.total or job.step
            job.eta_s = 0.0
            job.state = "succeeded"
        except Exception as error:  # the job reports any failure; the server keeps running
            log.exception("Training job %s failed", job.job_id)
            job.error = f"{type(error).__name__}: {error}"
            job.state = "failed"
        finally:
            job.finished_at = _now()
            log.info(
                "Training job %s %s in %.1fs", job.job_id, job.state, time.monotonic() - started
            )

    def wait(self, job_id: str, timeout: float | None = None) -> TrainJob:
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(job_id)
        while job.active and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
        return job


training_jobs = TrainingJobs()
