"""Peer gating methods on the shared backbones, gate interface, MACs table and executor.

Importing this package registers their models (``aig_*``, ``drnet_*``, ``lcnet_*``, ``twin_*``).
"""

from . import aig, drnet, lcnet, twin  # noqa: F401  (registration side effects)
