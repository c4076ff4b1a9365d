"""Training jobs run in a child process, one at a time, reporting progress; they can be cancelled.

`POST /api/chat/qlora/train` starts one (202 + job id); `GET .../train/{job_id}` polls it;
`DELETE .../train/{job_id}` cancels it. The job writes its conversations as chat JSONL and
its options as `job.json` in the run folder, then runs `finetune train --config job.json`
(the same entry as the command line) as a child process: with `TRAINING_GPUS` 0 and more
than one GPU visible, through `accelerate launch`, one process per GPU. A child process,
not a thread, because training loads its own copy of the base, seeds the RNGs, can run out
of memory, and must be stoppable: none of that may touch the serving process. The child
appends progress to `progress.jsonl` (rank 0 only) and its log to `train.log`; it checks its
memory estimate against what the device has free before the first step and fails with a
clear error when the run would not fit. When it succeeds the adapter folder
(`final_model_path`) can be hot-swapped into the running chat with `load_trained`.

The request's options are `finetune.config.TrainConfig`'s fields (`request_options()`, from
which `api.schemas.TrainRequest` is built), all but those the server sets itself
(`SERVER_CONTROLLED`). Every job is built from its own request only: nothing set by another
endpoint carries over.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.settings import PROJECT_ROOT, get_settings
from finetune.config import Option, TrainConfig, train_options
from finetune.distributed import launch_argv, visible_gpus

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
    state: str = "queued"  # queued | running | succeeded | failed | cancelled
    step: int = 0
    total: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    epoch: float | None = None
    final_model_path: str | None = None
    train_loss: float | None = None
    error: str | None = None
    processes: int = 1  # training processes (one per GPU with accelerate launch)
    log_path: str | None = None
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
SERVER_CONTROLLED = frozenset(
    {"data", "categories", "difficulties", "resume", "progress_bar", "progress_file"}
)


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


def job_values(data_path: Path, output_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """A job's TrainConfig values: the request's options (TrainConfig field names; LoRA
    options included) and the server-controlled ones; validated as a TrainConfig."""
    controlled = sorted(set(params) & SERVER_CONTROLLED)
    if controlled:
        raise ValueError(f"{controlled[0]!r} is set by the server, not by a training request.")
    values = {
        **params,
        "data": str(data_path),
        "output_dir": str(output_dir),
        "progress_bar": False,
        "progress_file": str(output_dir / PROGRESS_FILE),
    }
    TrainConfig.from_dict(values).validate()
    return values


PROGRESS_FILE = "progress.jsonl"
JOB_FILE = "job.json"
LOG_FILE = "train.log"
# Settings the child must share with the server (which may have set them in-process).
CHILD_SETTINGS = (
    "data_dir",
    "cache_dir",
    "checkpoints_dir",
    "local_base_model_path",
    "device",
    "quantization",
    "hf_token",
)
CANCEL_GRACE_S = 10.0


def training_processes(requested: int | None = None) -> int:
    """How many processes a job trains with: TRAINING_GPUS (0: every visible GPU), never more
    than the GPUs there are, one on a machine without CUDA."""
    wanted = get_settings().training_gpus if requested is None else requested
    gpus = visible_gpus()
    if gpus <= 1:
        return 1
    return gpus if wanted == 0 else min(wanted, gpus)


def child_environment() -> dict[str, str]:
    settings = get_settings()
    env = dict(os.environ)  # NCCL and CUDA variables pass through unchanged
    for name in CHILD_SETTINGS:
        value = getattr(settings, name)
        if value is not None:
            env[name.upper()] = str(value)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def last_error_line(log_path: Path) -> str | None:
    """The child's `error: ...` line (core.errors), else its last log line."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return None
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if line.startswith("error: ") or "Error: " in line or line.startswith("Traceback"):
            return line.removeprefix("error: ")
    return lines[-1] if lines else None


class TrainingJobs:
    def __init__(self):
        self._jobs: dict[str, TrainJob] = {}
        self._processes: dict[str, subprocess.Popen] = {}
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
                    f"(GET /api/chat/qlora/train/{current.job_id}) or cancel it (DELETE) "
                    "before starting another."
                )
            data_path = write_conversations(conversations, output_dir / "train_data.jsonl")
            try:
                values = job_values(data_path, output_dir, params)
            except ValueError as error:
                raise InvalidTrainingRequestError(str(error)) from error
            (output_dir / PROGRESS_FILE).unlink(missing_ok=True)
            job_file = output_dir / JOB_FILE
            job_file.write_text(json.dumps(values, indent=2, default=str), encoding="utf-8")
            job = TrainJob(
                job_id=uuid.uuid4().hex[:12],
                output_dir=str(output_dir),
                processes=training_processes(),
                log_path=str(output_dir / LOG_FILE),
            )
            argv = launch_argv(job.processes, ["--config", str(job_file)])
            with open(job.log_path, "wb") as log_file:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=child_environment(),
                    cwd=PROJECT_ROOT,  # `-m finetune` is this checkout's
                    start_new_session=True,  # its own process group: cancel stops every rank
                )
            self._jobs[job.job_id] = job
            self._processes[job.job_id] = process
            job.state = "running"
        log.info("Training job %s: %s (pid %d)", job.job_id, " ".join(argv), process.pid)
        threading.Thread(
            target=self._follow, args=(job, process), name=f"train-{job.job_id}", daemon=True
        ).start()
        return job

    def _follow(self, job: TrainJob, process: subprocess.Popen) -> None:
        progress = Path(job.output_dir) / PROGRESS_FILE
        read = 0
        started = time.monotonic()
        while True:
            exited = process.poll() is not None
            read = self._read_progress(job, progress, read)
            if exited:
                break
            time.sleep(0.5)
        if job.state != "cancelled" and process.returncode == 0:
            self._succeeded(job)
        elif job.state != "cancelled":
            job.state = "failed"
            job.error = last_error_line(Path(job.log_path)) or f"exit status {process.returncode}"
        job.finished_at = _now()  # last: a reader that sees it also sees the final state
        self._processes.pop(job.job_id, None)
        log.info("Training job %s %s in %.1fs", job.job_id, job.state, time.monotonic() - started)

    @staticmethod
    def _read_progress(job: TrainJob, path: Path, offset: int) -> int:
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return offset
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                report = json.loads(line)
            except json.JSONDecodeError:
                continue
            job.step = int(report.get("step") or job.step)
            job.total = report.get("total") or job.total
            if report.get("loss") is not None:
                job.loss = float(report["loss"])
            job.eta_s = report.get("eta_s")
            job.epoch = report.get("epoch")
        return offset + len(complete)

    @staticmethod
    def _succeeded(job: TrainJob) -> None:
        from core.adapters import read_training_info

        final = Path(job.output_dir) / "final_model"
        info = read_training_info(final) or {}
        job.final_model_path = str(final)
        job.train_loss = info.get("train_loss")
        job.step = job.total or job.step
        job.eta_s = 0.0
        job.state = "succeeded"

    def cancel(self, job_id: str) -> TrainJob:
        """Stop a running job (its whole process group: every rank); the run folder stays."""
        job = self.get(job_id)
        process = self._processes.get(job_id)
        if not job.active or process is None:
            return job
        job.state = "cancelled"
        job.error = "cancelled by request"
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(CANCEL_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
        return job

    def shutdown(self) -> None:
        """Stop running children when the server exits (they run in their own session)."""
        for job_id in list(self._processes):
            self.cancel(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> TrainJob:
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(job_id)
        while (job.active or job.finished_at is None) and (
            deadline is None or time.monotonic() < deadline
        ):
            time.sleep(0.2)
        return job


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


training_jobs = TrainingJobs()
atexit.register(training_jobs.shutdown)
