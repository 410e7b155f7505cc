"""Donated block inputs (#13): at eval without autograd a block writes its residual sum into its
shortcut's output, or into its own input when the network gives it away, instead of a clone;
never into a tensor someone else may still hold."""

from __future__ import annotations

import pytest
import torch

import dmnn

# rows 0, 1: path 0 only; row 2: both; row 3: off; rows 4, 5: path 1 only
GATES = torch.tensor([[1, 0], [1, 0], [1, 1], [0, 0], [0, 1], [0, 1]], dtype=torch.float32)


def identity_block() -> dmnn.network.block.GatedBlock:
    torch.manual_seed(0)
    model = dmnn.create_model("dmnn_resnet20", num_classes=10).eval()
    block = model.blocks[1]
    assert isinstance(block.shortcut, torch.nn.Identity)
    block.gate_override = lambda i, b, dev: GATES
    return block


def reference(block, x: torch.Tensor) -> torch.Tensor:
    """Masked dense: every path on every row, times its gate (eqn 4 literally)."""
    block.execution = "dense"
    try:
        with torch.inference_mode():
            y, _ = block(x.clone())
    finally:
        block.execution = "auto"
    return y


@pytest.mark.parametrize("execution,split", [("auto", "pattern"), ("auto", "path"),
                                             ("sparse", "pattern")])
def test_a_donated_input_holds_the_sum_and_it_is_right(execution, split):
    block = identity_block()
    x = torch.randn(6, 16, 8, 8)
    expected = reference(block, x)
    donated = x.clone()
    block.execution, block.mixed_split = execution, split
    with torch.inference_mode():
        y, _ = block(donated, donate=True)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    if (execution, split) == ("auto", "pattern"):  # written in place: no clone was made
        assert y.data_ptr() == donated.data_ptr()
    else:  # overlapping path row sets: a later path reads x, so x is not the sum's buffer
        assert y.data_ptr() != donated.data_ptr()


def test_an_input_not_donated_is_left_as_it_was():
    block = identity_block()
    x = torch.randn(6, 16, 8, 8)
    before = x.clone()
    with torch.inference_mode():
        y, _ = block(x)
    assert torch.equal(x, before)
    torch.testing.assert_close(y, reference(block, before), rtol=1e-5, atol=1e-5)


def test_a_hook_or_autograd_keeps_the_input_intact():
    block = identity_block()
    x = torch.randn(6, 16, 8, 8)
    before = x.clone()
    seen = []
    handle = block.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.inference_mode():
        block(x, donate=True)
    handle.remove()
    assert torch.equal(seen[0], before)  # what the hook holds is what the block was given
    x.requires_grad_(True)
    y, _ = block(x, donate=True)  # eval with autograd on: nothing written in place
    y.sum().backward()
    assert x.grad is not None and torch.equal(x.detach(), before)


def test_the_network_donates_its_own_tensors_never_the_callers_image():
    model = dmnn.create_model("dmnn_resnet20", num_classes=10, in_chans=16).eval()
    donated: list[bool] = []
    for block in model.blocks[:2]:
        forward = block.forward
        block.forward = lambda x, state=None, donate=False, f=forward: (
            donated.append(donate), f(x, state, donate=donate))[1]
    image = torch.randn(2, 16, 8, 8)
    with torch.inference_mode():
        model(image)
    assert donated == [True, True]  # the stem's output and block 0's output are the network's
    model.stem = torch.nn.Identity()  # block 0 (identity shortcut) now reads the caller's image
    before, donated[:] = image.clone(), []
    with torch.inference_mode():
        model(image)
    assert donated == [False, True]
    assert torch.equal(image, before)
