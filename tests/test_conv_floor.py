"""scripts/bench/conv_floor.py: the kernel floor times the stacks the fused executor would run."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from dmnn import create_model


def test_branch_macs_weighs_each_sub_block_by_its_gate(load_script):
    # block 0: sub-blocks of 10 and 20 MACs, rows (1, 0) and (1, 1) -> 10 and 30, mean 20;
    # block 1 is static (None): its 30 MACs always count -> 50
    table = SimpleNamespace(paths=((10, 20), (30,)))
    gates = [torch.tensor([[1.0, 0.0], [1.0, 1.0]]), None]
    assert load_script("bench/conv_floor.py").branch_macs(table, gates) == 50.0


def test_floors_time_each_pattern_and_each_path_on_its_own_rows(monkeypatch, load_script):
    script = load_script("bench/conv_floor.py")
    model = create_model("dmnn_resnet20").eval()
    x = torch.randn(4, 3, 8, 8)
    calls: list[tuple[int, tuple[int, ...], int]] = []

    def record(block, on, rows, repeats):
        calls.append((block.index, on, rows.shape[0]))
        return 1.0

    monkeypatch.setattr(script, "stack_ms", record)
    # block 0: rows 0, 1 path 0 only, row 2 both, row 3 off; every other block all on
    first = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    gates = [first] + [torch.ones(4, 2) for _ in model.blocks[1:]]
    with torch.inference_mode():
        inputs = script.block_inputs(model, x)
        pattern, path = script.floors(model, inputs, gates, repeats=1)
    block0 = [c for c in calls if c[0] == 0]
    assert block0 == [(0, (0,), 2), (0, (0, 1), 1),  # patterns: code 1 on 2 rows, code 3 on 1
                      (0, (0,), 3), (0, (1,), 1)]     # paths: path 0 on 3 rows, path 1 on 1
    rest = len(model.blocks) - 1
    assert pattern == 2 + rest and path == 2 + 2 * rest
    assert [t.shape[0] for t in inputs] == [4] * len(model.blocks)


def test_floors_of_a_static_network_time_one_stack_a_block(monkeypatch, load_script):
    script = load_script("bench/conv_floor.py")
    static = create_model("resnet20").eval()
    monkeypatch.setattr(script, "stack_ms", lambda block, on, rows, repeats: float(rows.shape[0]))
    with torch.inference_mode():
        inputs = script.block_inputs(static, torch.randn(3, 3, 8, 8))
        pattern, path = script.floors(static, inputs, [None] * len(static.blocks), repeats=1)
    assert pattern == path == 3.0 * len(static.blocks)
