"""Data-parallel training and evaluation on PyTorch's own engine (torchrun + DDP).

* :mod:`.group`: the process group a ``torchrun`` launch describes (rank, world size, backend,
  device), entered once per run; ``active()`` is None in a single process.
* :mod:`.batch_stats`: batch means over the *global* batch (eqns 11, 13–14, path balance,
  category loss), with gradients that are exact once DDP averages them.
* :mod:`.sync_bn`: ``--sync-bn``: torch's SyncBatchNorm where it runs (CUDA), a CPU one otherwise.
* :mod:`.shards`: which rows of an epoch a rank reads, and gathering per-sample eval results.

Nothing here imports the rest of dmnn: the network, the methods and the engine all use it.
"""

from .batch_stats import batch_mean, batch_means
from .group import DistContext, active, dist_env, setup
from .shards import gather_rows, shard_order
from .sync_bn import GlobalBatchNorm2d, convert_sync_batchnorm

__all__ = [
    "DistContext",
    "GlobalBatchNorm2d",
    "active",
    "batch_mean",
    "batch_means",
    "convert_sync_batchnorm",
    "dist_env",
    "gather_rows",
    "setup",
    "shard_order",
]
