"""prove-jobs: sweeps of mmsegmentation training runs on SLURM, and where each run stands.

Core modules (spec, runs, locks, status, cli) never import torch, mmengine or mmseg;
only ``prove_jobs.payload`` does, lazily, on the compute node.
"""

__version__ = "0.1.0"
