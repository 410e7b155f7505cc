"""Model summaries: parameters, MACs (full, minimum, controllers) and a per-block breakdown."""

from __future__ import annotations

from typing import Any

from ..checks import check_int
from ..errors import UsageError
from ..network.dynamic_net import DynamicNet
from ..network.gate import training_only_parameters
from ..registry import create_model, method_of


def build_model(
    name: str, *, sub_blocks: int | None = None, num_classes: int | None = None, **kwargs: Any
) -> DynamicNet:
    """create_model with the CLI's common options; ``sub_blocks`` only for gated families."""
    if sub_blocks is not None:
        if "num_sub_blocks" not in method_of(name).options.names():
            raise UsageError(f"--sub-blocks applies to dmnn_* and twin_* models, not {name!r}")
        kwargs["num_sub_blocks"] = sub_blocks
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return create_model(name, **kwargs)


def summarize_model(model: DynamicNet, input_size: int | None = None) -> dict[str, Any]:
    """Plain-number summary (ints for parameters and MACs), JSON-ready."""
    size = input_size if input_size is not None else model.default_input_size
    check_int("input_size", size, 1)
    try:
        table = model.macs_table(size)
    except UsageError as err:
        name = model.arch.get("name")
        raise UsageError(f"input_size={size} does not fit {name}: {err}") from None
    blocks = []
    for i, block in enumerate(model.blocks):
        blocks.append({
            "index": i,
            "stage": block.stage,
            "in_channels": block.in_channels,
            "out_channels": block.out_channels,
            "stride": block.stride,
            "sub_blocks": block.num_sub_blocks,
            "sub_block_width": block.sub_block_width,
            "gated": block.gate is not None,
            "params": sum(p.numel() for p in block.parameters())
            - sum(p.numel() for p in training_only_parameters([block.gate])),
            "shortcut_macs": table.shortcut[i],
            "sub_block_macs": list(table.paths[i]),
            "controller_macs": table.controller[i],
        })
    return {
        "model": model.arch.get("name", type(model).__name__),
        "input_size": size,
        "num_classes": model.num_classes,
        "params": model.num_params(),
        "params_with_category_heads": model.num_params(include_category_heads=True),
        "macs": table.full,
        "macs_min": table.minimum,
        "macs_dynamic": table.dynamic_full,
        "controller_macs": table.controller_total,
        "controller_share": table.controller_total / table.full,
        "arch": model.arch,
        "blocks": blocks,
    }

