"""dmnn: Dynamic Multi-path Neural Networks whose compute savings are real and measured."""

from . import models  # noqa: I001,F401  (registers the backbones first)
from . import methods  # noqa: F401  (then the peer methods)
from .gates import GateDecision
from .macs import MacsTable
from .models import DMNNOptions, DynamicNet, GatedBlock, count_params
from .registry import create_model, list_models
from .routing import Routing

__version__ = "0.1.0"

__all__ = [
    "DMNNOptions", "DynamicNet", "GateDecision", "GatedBlock", "MacsTable", "Routing",
    "count_params", "create_model", "list_models",
]
