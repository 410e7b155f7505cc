"""Peer gating methods on the shared backbones, gate interface, MACs table and executor.

Importing this package registers their models (``aig_*``, ``drnet_*``, ``twin_*``).
"""

from . import aig, drnet, twin  # noqa: F401  (registration side effects)
