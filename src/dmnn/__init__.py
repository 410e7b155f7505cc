"""dmnn: Dynamic Multi-path Neural Networks whose compute savings are real and measured.

The public API is re-exported here and imported on first use (PEP 562), so ``import dmnn`` is
cheap and importing one submodule never pulls in the rest of the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "dmnn.registry", "list_models": "dmnn.registry",
    "register_backbone": "dmnn.registry", "register_method": "dmnn.registry",
    "Backbone": "dmnn.backbones",
    "DynamicNet": "dmnn.network.dynamic_net", "count_params": "dmnn.network.dynamic_net",
    "GatedBlock": "dmnn.network.block",
    "Gate": "dmnn.network.gate", "GateDecision": "dmnn.network.gate",
    "MacsTable": "dmnn.network.macs", "Routing": "dmnn.network.routing",
    "Method": "dmnn.methods.base", "MethodOptions": "dmnn.methods.base",
    "Loss": "dmnn.methods.base", "LossOutput": "dmnn.methods.base",
    "DMNNOptions": "dmnn.methods.dmnn",
    "force_gates": "dmnn.execution.forcing",
}

__all__ = [
    "Backbone", "DMNNOptions", "DynamicNet", "Gate", "GateDecision", "GatedBlock", "Loss",
    "LossOutput", "MacsTable", "Method", "MethodOptions", "Routing", "count_params",
    "create_model", "force_gates", "list_models", "register_backbone", "register_method",
]

if TYPE_CHECKING:
    from .backbones import Backbone
    from .execution.forcing import force_gates
    from .methods.base import Loss, LossOutput, Method, MethodOptions
    from .methods.dmnn import DMNNOptions
    from .network.block import GatedBlock
    from .network.dynamic_net import DynamicNet, count_params
    from .network.gate import Gate, GateDecision
    from .network.macs import MacsTable
    from .network.routing import Routing
    from .registry import create_model, list_models, register_backbone, register_method


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dmnn' has no attribute {name!r}")
