"""Data-parallel training on several GPUs of one host (or several CPU processes): the launcher's
argv, the rank this process is, and the few collectives `finetune.train` needs.

    accelerate launch --multi_gpu --num_processes 4 -m finetune train --data qa.csv
    torchrun --nproc_per_node 4 -m finetune train --data qa.csv

Both launchers start one process per GPU and set RANK, LOCAL_RANK and WORLD_SIZE; the Trainer
(through accelerate) joins the process group (NCCL on GPUs, gloo on the CPU) and wraps the LoRA
model in DistributedDataParallel, so every rank trains on its own shard of each global batch and
the adapter's gradients are all-reduced. Each rank loads the (4-bit) base on its own GPU,
`cuda:LOCAL_RANK` (`device_for_rank`). Rank 0 alone writes the adapter, training_info.json, the
loss curve and progress; checkpoints are the Trainer's (one rng_state_<rank>.pth per rank), and
a run resumes from them with any number of processes.

Nothing here sets or unsets environment variables: what the caller's environment holds
(NCCL_NVLS_ENABLE=0 and the like) reaches every rank unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")

# When set to a folder, each rank appends the rows its data loaders collate (training, and
# evaluation when there is an eval split) to FOLDER/rank-<rank>.jsonl, one line a batch: a SHA-1
# of each row's input ids. For checking how the data is sharded (tests/test_distributed.py); the
# loader fetches one batch ahead, so the file can hold a batch that was never trained.
BATCH_TRACE_ENV = "FINETUNE_BATCH_TRACE"


@dataclass(frozen=True)
class RankInfo:
    world_size: int
    rank: int
    local_rank: int

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        return default


def rank_info() -> RankInfo:
    """World size, global rank and local rank from the launcher's environment (RANK, LOCAL_RANK,
    WORLD_SIZE, as torchrun and accelerate set them); 1, 0, 0 in a plain process."""
    world = max(1, _env_int("WORLD_SIZE", 1))
    rank = _env_int("RANK", 0)
    return RankInfo(world_size=world, rank=rank, local_rank=_env_int("LOCAL_RANK", rank))


def is_main_process() -> bool:
    """Rank 0 (or a plain process): the one that writes files and reports progress."""
    return rank_info().is_main


def visible_gpus() -> int:
    """The CUDA devices this process sees (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launch_argv(num_processes: int, train_args: list[str]) -> list[str]:
    """The argv that runs `finetune train *train_args` in `num_processes` data-parallel processes.

    One process: `python -m finetune train ...`. More: accelerate's launcher,
    `python -m accelerate.commands.launch --num_processes N --multi_gpu --main_process_port 0
    -m finetune train ...`. `--multi_gpu` is accelerate's torch.distributed.run launcher: one
    process per GPU with NCCL, or, without CUDA, CPU processes over gloo (`--cpu` would start a
    single process unless MPI is installed). Port 0 takes a free port, so two runs on one host
    do not collide on 29500. The child inherits the caller's environment untouched.
    """
    train = ["-m", "finetune", "train", *train_args]
    n = int(num_processes)
    if n <= 1:
        return [sys.executable, *train]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(n),
        "--num_machines",
        "1",
        "--multi_gpu",
        "--main_process_port",
        "0",
        "--dynamo_backend",
        "no",
        *train,
    ]


def device_for_rank(device: str) -> str:
    """`cuda` becomes `cuda:LOCAL_RANK` in a distributed run (each rank loads the base on its own
    GPU: device_map {"": "cuda:LOCAL_RANK"} for a quantized base); anything else is unchanged."""
    info = rank_info()
    if info.distributed and device == "cuda":
        torch.cuda.set_device(info.local_rank)
        return f"cuda:{info.local_rank}"
    if info.distributed and device.startswith("cuda:"):
        log.warning(
            "device %s in a %d-process run: every rank trains on that one GPU; give --device "
            "cuda (or auto) for one GPU per rank.",
            device,
            info.world_size,
        )
    return device


def init_process_group(cpu: bool) -> None:
    """Join the process group now (gloo on the CPU, NCCL on CUDA), as the Trainer would later:
    accelerate's PartialState is shared, so the Trainer reuses this one."""
    if not rank_info().distributed:
        return
    from accelerate import PartialState

    PartialState(cpu=cpu)


def barrier() -> None:
    if rank_info().distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()


def on_main(compute: Callable[[], T]) -> T:
    """Compute on rank 0 and hand every rank the same value (or the same exception), so that
    choices such as the run folder's time-stamped name agree across ranks."""
    if not (rank_info().distributed and torch.distributed.is_initialized()):
        return compute()
    box: list[Any] = [None]
    if is_main_process():
        try:
            box[0] = ("ok", compute())
        except Exception as error:  # every rank raises it, none waits forever
            box[0] = ("error", error)
    torch.distributed.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def quiet_other_ranks() -> None:
    """On ranks other than 0, only warnings and errors from this code and the libraries."""
    if is_main_process():
        return
    for name in ("finetune", "core", "transformers", "trl", "peft", "accelerate"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
    except ImportError:  # pragma: no cover
        pass


def trace_batches(collator: Callable, folder: str | Path) -> Callable:
    """Wrap a data collator so that this rank appends each batch's row fingerprints to
    FOLDER/rank-<rank>.jsonl (see BATCH_TRACE_ENV)."""
    target = Path(folder) / f"rank-{rank_info().rank}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)

    def collate(rows):
        fingerprints = [
            hashlib.sha1(json.dumps(list(row["input_ids"])).encode()).hexdigest()[:16]
            for row in rows
        ]
        with target.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"rows": fingerprints}) + "\n")
        return collator(rows)

    return collate
