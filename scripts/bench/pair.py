"""What the paired benches (``conv_floor``, ``op_profile``, ``mixed_split``) set up alike: their
common options, the gated network and its static backbone in one layout on one input, and the
allocator setting. One place, so the three compare the same two networks the same way."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util

import torch
from torch import Tensor, nn

from dmnn import create_model
from dmnn.evaluation.latency import static_backbone_for


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the OS (``mallopt``), so that a
    timed call does not pay page faults for its output: on this VM the default allocator faults
    in ≈ 35 MB a ResNet-56 forward at batch 32 (``ru_minflt``), which inflates large outputs
    more than small ones and so favours the network with the smaller tensors. Returns whether
    it could (not on other C libraries)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim, mmap = -1, -3  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
        return bool(libc.mallopt(trim, 1 << 30)) and bool(libc.mallopt(mmap, 1 << 25))
    except (OSError, AttributeError):
        return False


def pair_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the options every paired bench takes; each script adds its own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--json", action="store_true")
    return p


def build_pair(args: argparse.Namespace) -> tuple[nn.Module, nn.Module, int, Tensor]:
    """(gated model, its static backbone, input size, one random batch), both networks in eval
    mode and in the layout ``--channels-last`` asks for, the batch in it too."""
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model = create_model(args.model).eval().to(memory_format=layout)
    static = static_backbone_for(args.model).eval().to(memory_format=layout)
    size = args.input_size or model.default_input_size
    x = torch.randn(args.batch, model.in_chans, size, size).contiguous(memory_format=layout)
    return model, static, size, x
