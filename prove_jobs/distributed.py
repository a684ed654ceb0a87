"""Several training processes for one run (DDP under SLURM): who this process is, and its process group.

mmengine's own ``launcher='slurm'`` path (``mmengine.dist.utils._init_dist_slurm``) reads the rank
from ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``, but takes ``MASTER_ADDR`` from
``scontrol show hostname`` (missing in many containers: mmcv #700) and defaults ``MASTER_PORT`` to
29500 (two jobs on one node collide: mmengine #169), and it calls ``torch.cuda.set_device``
unconditionally (no CPU). So, before the Runner starts: both variables are set here from the job's
own environment (mmengine keeps preset ones), the same on every rank; on GPUs mmengine then
initialises NCCL itself; on CPU (the project's test cluster) a gloo group is created here, which
makes mmengine skip its own initialisation.

Imports torch only inside :func:`setup` (the payload calls it where the job runs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PORT_BASE, PORT_SPAN = 20000, 40000  # submitit's helpers.TorchDistributedEnvironment draws from the same range


@dataclass(frozen=True)
class Rank:
    """This process's place among the run's training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        """Rank 0 speaks for the run: the training lock, the metadata, the job-log links."""
        return self.rank == 0


def slurm_rank(env: dict[str, str] | None = None) -> Rank:
    """From SLURM's task variables (one task per GPU); a single process outside SLURM."""
    env = dict(os.environ) if env is None else env
    if not env.get("SLURM_JOB_ID"):
        return Rank()
    world = int(env.get("SLURM_NTASKS") or 1)
    if world <= 1:
        return Rank()
    return Rank(int(env.get("SLURM_PROCID") or 0), world, int(env.get("SLURM_LOCALID") or 0))


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,09],cpu1`` -> ``gpu03`` (what ``scontrol show hostname``
    would print first)."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        raise ValueError(f"not a SLURM node list: {nodelist!r}")
    prefix, ranges = match.group(1), match.group(2)
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def master_port(job_id: str) -> int:
    """A port derived from the job id: the same on every rank (a free-port search per rank gives different
    ports and hangs: mmcv #2309), and different for two jobs sharing a node."""
    digits = int("".join(c for c in job_id if c.isdigit()) or 0)
    return PORT_BASE + digits % PORT_SPAN


def distributed_environment(rank: Rank, env: dict[str, str]) -> dict[str, str]:
    """The variables torch.distributed's ``env://`` and mmengine read, from SLURM's (preset ones win)."""
    return {
        "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(env.get("SLURM_JOB_NODELIST") or "localhost"),
        "MASTER_PORT": env.get("MASTER_PORT") or str(master_port(env.get("SLURM_JOB_ID", "0"))),
        "RANK": str(rank.rank),
        "WORLD_SIZE": str(rank.world_size),
        "LOCAL_RANK": str(rank.local_rank),
    }


def setup(cfg: Any, rank: Rank) -> str | None:
    """Make ``cfg`` (an mmengine Config, before the Runner is built) train as one of ``rank.world_size`` processes.

    Returns a line for the run's log when the config had to change (SyncBN on CPU), else ``None``.
    """
    import torch

    os.environ.update(distributed_environment(rank, dict(os.environ)))
    cfg.launcher = "slurm"
    if torch.cuda.is_available():
        return None  # mmengine: NCCL, set_device(LOCAL_RANK), DDP on this rank's GPU
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank.rank, world_size=rank.world_size)
    # mmengine would wrap the model with device_ids=[LOCAL_RANK], a GPU; on CPU DDP takes none
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None)
    if cfg.get("sync_bn"):
        # torch's SyncBatchNorm runs on GPUs only ("SyncBatchNorm expected input tensor to be on GPU")
        note = (f"prove-jobs: sync_bn={cfg.sync_bn!r} dropped: CPU processes (gloo) cannot run SyncBN; each of the "
                f"{rank.world_size} processes normalises its own images with plain BN")
        cfg.sync_bn = None
        return note
    return None
