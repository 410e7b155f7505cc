"""When a tensor may be written in place: aliasing and hooks.

The eval executors write a block's sum into its shortcut output instead of a fresh tensor. That
is safe only when nothing else can see the buffer: not the block's input (an identity shortcut
returns it), and not a hook that might hold either.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn.modules import module as _module


def shares_memory(a: Tensor | None, b: Tensor) -> bool:
    """Whether ``a`` may alias ``b`` (same storage): a shortcut that returns its input or a view
    of it. Writing such a base in place would change rows that later paths still read."""
    return a is not None and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def global_hooks() -> bool:
    """Whether torch's global module hooks (private registries, read defensively) are set."""
    return any(
        getattr(_module, name, None)
        for name in ("_global_forward_hooks", "_global_forward_pre_hooks",
                     "_global_backward_hooks", "_global_backward_pre_hooks")
    )
