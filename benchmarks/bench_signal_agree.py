"""What the save-at-signal agreement costs a DDP iteration: one all-reduce of one integer per iteration.

Two gloo processes on this machine (the CPU path; NCCL on GPUs is not measured here). Each rank times
N iterations of a small real step (a 3x3 conv forward/backward on a 2x3x64x64 batch and its gradient all-reduce,
as DDP does) with and without the extra all-reduce, side by side in one run. Prints microseconds per
agreement and its share of the step.
"""

from __future__ import annotations

import os
import sys
import time

N = 300


def _rank(rank: int, world: int, port: int, out: dict[str, float]) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from prove_jobs.save_at_signal import _agreed

    conv = torch.nn.Conv2d(3, 16, 3)
    batch = torch.randn(2, 3, 64, 64)

    def step() -> None:
        conv.zero_grad()
        conv(batch).sum().backward()
        for p in conv.parameters():
            dist.all_reduce(p.grad)

    timings = {}
    for label, agree in (("plain", False), ("agreed", True), ("plain again", False), ("agreed again", True)):
        dist.barrier()
        start = time.perf_counter()
        for _ in range(N):
            step()
            if agree:
                _agreed(False)
        timings[label] = (time.perf_counter() - start) / N
    if rank == 0:
        out.update(timings)
    dist.destroy_process_group()


def main() -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_rank, args=(2, port, out), nprocs=2)
    plain = min(out["plain"], out["plain again"])
    agreed = min(out["agreed"], out["agreed again"])
    print(f"save-at-signal agreement (2 gloo ranks, {N} steps each way): step {plain * 1e3:.2f} ms plain, "
          f"{agreed * 1e3:.2f} ms with the agreement: +{(agreed - plain) * 1e6:.0f} us "
          f"({(agreed - plain) / plain:+.1%})")


if __name__ == "__main__":
    sys.exit(main())
