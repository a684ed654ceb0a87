"""Several training processes for one run (DDP under SLURM): who this process is, and its process group.

mmengine's own ``launcher='slurm'`` path (``mmengine.dist.utils._init_dist_slurm``) reads the rank
from ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``, but takes ``MASTER_ADDR`` from
``scontrol show hostname`` (missing in many containers: mmcv #700) and defaults ``MASTER_PORT`` to
29500 (two jobs on one node collide: mmengine #169), and it calls ``torch.cuda.set_device``
unconditionally (no CPU). So, before the Runner starts: both variables are set here from the job's
own environment (mmengine keeps preset ones), the same on every rank; on GPUs mmengine then
initialises NCCL itself; on CPU (the project's test cluster) a gloo group is created here, which
makes mmengine skip its own initialisation.

Across nodes, two more things must hold (each seen failing on the two-node test cluster): the rendezvous
address is the first node's real address, never a loopback one (Debian's installer maps a host's own name
to 127.0.1.1), and gloo/NCCL talk over the interface that reaches it (gloo binds to whatever the hostname
resolves to: 127.0.1.1 there, and the other node's connection is refused). docs/cluster.md has the facts.

Imports torch only inside :func:`setup` (the payload calls it where the job runs).
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

from prove_jobs.errors import RunError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

COLLECTIVE_TIMEOUT_VAR = "PROVE_JOBS_COLLECTIVE_TIMEOUT_S"  # resources.collective_timeout_s, set by the job script
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


def nodes_in_job(env: dict[str, str]) -> int:
    """How many nodes the job spans (SLURM's count; 1 outside SLURM)."""
    return int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)


def node_list(env: dict[str, str]) -> str:
    """SLURM's node list of a job across several nodes (``mn[1-2]``), as it names them; "" on one node."""
    return env.get("SLURM_JOB_NODELIST", "")[:255] if nodes_in_job(env) > 1 else ""


def master_port(job_id: str) -> int:
    """A port derived from the job id: the same on every rank (a free-port search per rank gives different
    ports and hangs: mmcv #2309), and different for two jobs sharing a node."""
    digits = int("".join(c for c in job_id if c.isdigit()) or 0)
    return PORT_BASE + digits % PORT_SPAN


def resolve_ipv4(host: str) -> list[str]:
    """``host``'s IPv4 addresses as this node resolves them (its hosts file, DNS), in order; [] when it does not."""
    try:
        found = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def _loopback(address: str) -> bool:
    return address.startswith("127.")


def rendezvous_address(env: dict[str, str], resolve: Callable[[str], list[str]] = resolve_ipv4) -> str:
    """Where every rank meets rank 0: ``MASTER_ADDR`` if set; else the first node's first address that is not
    loopback; else the address SLURM gives every task of the node the job's ``srun`` ran on
    (``SLURM_LAUNCH_NODE_IPADDR``: submitit's batch script runs it on the first node). A one-node job may
    meet on loopback; a job across nodes that finds no other address is refused, naming what is missing."""
    if env.get("MASTER_ADDR"):
        return env["MASTER_ADDR"]
    host = first_host(env.get("SLURM_JOB_NODELIST") or "localhost")
    addresses = resolve(host)
    routable = [a for a in addresses if not _loopback(a)]
    launch = env.get("SLURM_LAUNCH_NODE_IPADDR", "")
    if routable:
        return routable[0]
    if launch and not _loopback(launch):
        return launch
    if nodes_in_job(env) <= 1:
        return addresses[0] if addresses else "127.0.0.1"
    found = ", ".join(addresses) or "nothing"
    raise RunError(f"no rendezvous address for this job across nodes: its first node {host} resolves to {found} "
                   "here (loopback cannot reach the other nodes) and SLURM set no SLURM_LAUNCH_NODE_IPADDR; "
                   "set MASTER_ADDR in the sweep's [environment], or map the node names to their addresses "
                   "(/etc/hosts, DNS)")


def interface_towards(address: str) -> tuple[str, str] | None:
    """The network interface (and this node's address on it) that traffic to ``address`` leaves by; None when
    it cannot be told (no route, not Linux)."""
    import fcntl
    import struct

    siocgifaddr = 0x8915  # Linux: an interface's IPv4 address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 9))  # UDP: chooses the route, sends nothing
            local = str(probe.getsockname()[0])
        except OSError:
            return None
        for _index, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), siocgifaddr, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            if socket.inet_ntoa(packed[20:24]) == local:
                return name, local
    return None


def distributed_environment(rank: Rank, env: dict[str, str],
                            resolve: Callable[[str], list[str]] = resolve_ipv4) -> dict[str, str]:
    """The variables torch.distributed's ``env://`` and mmengine read, from SLURM's (preset ones win)."""
    return {
        "MASTER_ADDR": rendezvous_address(env, resolve),
        "MASTER_PORT": env.get("MASTER_PORT") or str(master_port(env.get("SLURM_JOB_ID", "0"))),
        "RANK": str(rank.rank),
        "WORLD_SIZE": str(rank.world_size),
        "LOCAL_RANK": str(rank.local_rank),
    }


def network_environment(master_addr: str, env: dict[str, str]) -> dict[str, str]:
    """``GLOO_SOCKET_IFNAME``/``NCCL_SOCKET_IFNAME``: the interface that reaches the rendezvous address, for a job
    across nodes whose user set neither (else gloo binds where the hostname resolves: maybe loopback)."""
    if nodes_in_job(env) <= 1:
        return {}
    found = interface_towards(master_addr)
    if found is None:
        return {}
    return {key: found[0] for key in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME") if not env.get(key)}


RANK_HOSTS: list[str] = []  # each rank's host, as the ranks said at setup (gloo); [] until then
# What gloo and NCCL say when a peer is gone (lower case): which one depends on where the collective was, e.g.
# "Timed out waiting 5000ms for send operation to complete", "Application timeout caused pair closure"
_LOST = ("timed out", "timeout", "pair closure", "connection reset", "connection closed", "connection refused",
         "connectfullmesh", "broken pipe", "nccl", "distbackenderror")


def lost_contact(exc: BaseException, rank: Rank) -> str | None:
    """What a failed collective says about the job's ranks: which hosts this rank (the one reporting) lost
    contact with; ``None`` when ``exc`` is no collective's failure or this process trains alone."""
    text = f"{type(exc).__name__}: {exc}"
    if rank.world_size <= 1 or not any(word in text.lower() for word in _LOST):
        return None
    here = socket.gethostname()
    others = sorted({host for host in RANK_HOSTS if host != here})
    where = f"the ranks on {', '.join(others)}" if others else "another rank"
    timeout = os.environ.get(COLLECTIVE_TIMEOUT_VAR) or "600"
    return (f"lost contact across nodes: rank {rank.rank} on {here} had no answer from {where} within the "
            f"collective timeout ({timeout} s): a node died or dropped off the network")


def setup(cfg: Any, rank: Rank) -> list[str]:
    """Make ``cfg`` (an mmengine Config, before the Runner is built) train as one of ``rank.world_size`` processes.

    Returns the lines for the run's log: where the processes run and meet, and any change to the config
    (SyncBN on CPU). Each rank also says where it runs on its own stderr (its task's job log).
    """
    import torch

    os.environ.update(distributed_environment(rank, dict(os.environ)))
    os.environ.update(network_environment(os.environ["MASTER_ADDR"], dict(os.environ)))
    here = socket.gethostname()
    where = (f"prove-jobs: rank {rank.rank} of {rank.world_size} on {here}, rendezvous "
             f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
             + (f" over {os.environ['GLOO_SOCKET_IFNAME']}" if os.environ.get("GLOO_SOCKET_IFNAME") else ""))
    sys.stderr.write(where + "\n")  # this rank's own job log (submitit: one per task)
    sys.stderr.flush()
    notes = [where]
    cfg.launcher = "slurm"
    timeout_s = int(os.environ.get(COLLECTIVE_TIMEOUT_VAR) or 600)
    if torch.cuda.is_available():
        # mmengine: NCCL, set_device(LOCAL_RANK), DDP on this rank's GPU; its init_dist takes the timeout in
        # seconds, and a timed-out NCCL collective ends the process rather than hanging it
        cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["timeout"] = timeout_s
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        return notes
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank.rank, world_size=rank.world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    notes = [f"{notes[0]}; collectives time out after {timeout_s} s"]
    hosts: list[Any] = [None] * rank.world_size
    dist.all_gather_object(hosts, here)  # the run's log (rank 0's) names every rank's host
    RANK_HOSTS[:] = [str(host) for host in hosts]
    notes = [f"{notes[0]}; ranks on " + ", ".join(f"{i}: {host}" for i, host in enumerate(hosts))]
    # mmengine would wrap the model with device_ids=[LOCAL_RANK], a GPU; on CPU DDP takes none
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None)
    if cfg.get("sync_bn"):
        # torch's SyncBatchNorm runs on GPUs only ("SyncBatchNorm expected input tensor to be on GPU")
        notes.append(f"prove-jobs: sync_bn={cfg.sync_bn!r} dropped: CPU processes (gloo) cannot run SyncBN; each of "
                     f"the {rank.world_size} processes normalises its own images with plain BN")
        cfg.sync_bn = None
    return notes
