"""Mixed precision and memory layout on the CPU (bf16), and data sharding of the loaders."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dmnn import create_model, force_gates
from dmnn.data.arrays import ArraySplit
from dmnn.data.loaders import TensorBatchLoader
from dmnn.distributed import shard_order
from dmnn.train.config import resolve_config
from dmnn.train.engine import train

DYNAMIC = ["dmnn_resnet20", "aig_resnet20", "drnet_resnet20", "lcnet_resnet20",
           "dmnn_mobilenetv2"]


@pytest.mark.parametrize("name", DYNAMIC)
def test_sparse_equals_masked_dense_under_bf16(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    size = 32
    x = torch.randn(12, 3, size, size)
    g = torch.Generator().manual_seed(1)
    pattern = [torch.randint(0, 2, (12, b.num_sub_blocks), generator=g).float()
               for b in model.blocks]  # mixed rows, the same for both runs
    with torch.no_grad(), force_gates(model, pattern):
        outs = {}
        for mode in ("sparse", "dense"):
            model.set_execution(mode)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits, routing = model(x, return_routing=True)
            outs[mode] = (logits.float(), routing.macs)
    (ls, ms), (ld, md) = outs["sparse"], outs["dense"]
    scale = ld.abs().max().item()
    assert (ls - ld).abs().max().item() <= 0.05 * scale  # bf16: 8 bits of mantissa
    assert torch.equal(ms, md) and ms.dtype == torch.float64  # MACs stay exact


def test_bf16_training_is_finite(tmp_path):
    cfg = resolve_config("digits", None, {"amp": "bf16", "channels_last": True, "epochs": 2,
                                          "max_train_samples": 256, "max_test_samples": 64})
    final = train(cfg, tmp_path / "run", progress=False)
    records = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train_loss"]) for r in records)
    assert records[-1]["train_loss"] < records[0]["train_loss"] + 1.0
    assert 0.0 < final["macs_ratio"] <= 1.0


def test_shards_are_disjoint_and_cover_the_epoch():
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    for pad in (False, True):
        parts = [shard_order(order, k, 3, pad) for k in range(3)]
        joined = torch.cat(parts)
        assert set(joined.tolist()) == set(range(10))
        if pad:  # every rank the same number of rows: 10 → 12, two repeated
            assert [p.numel() for p in parts] == [4, 4, 4]
        else:
            assert sorted(joined.tolist()) == list(range(10))
    assert torch.equal(shard_order(order, 0, 1, True), order)


def test_sharded_loader_reads_its_rows_deterministically():
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 1, 4, 4).clone()
    split = ArraySplit(images, torch.arange(20), [str(i) for i in range(20)])
    def loader(rank, world):
        return TensorBatchLoader(split, torch.zeros(20, dtype=torch.int64), mean=(0.0,),
                                 std=(1.0,), batch_size=4, shuffle=True, seed=5
                                 ).shard(rank, world, pad=True)
    whole = torch.cat([b.labels for b in loader(0, 1)])
    ranks = [torch.cat([b.labels for b in loader(k, 2)]) for k in range(2)]
    assert len(loader(0, 2)) == 3  # 10 rows of 20 in batches of 4
    assert torch.equal(torch.stack(ranks, 1).reshape(-1), whole)  # the same epoch order
    again = torch.cat([b.labels for b in loader(1, 2)])
    assert torch.equal(again, ranks[1])


@pytest.mark.parametrize("name", ["dmnn_resnet20", "dmnn_mobilenetv2"])
def test_grouped_training_path_equals_dense_under_bf16(name):
    """The fused training executor under autocast: same logits and gate gradients as dense."""
    from dmnn.network.gate import set_gate_noise

    results = {}
    for mode in ("grouped", "dense"):
        torch.manual_seed(0)
        model = create_model(name, num_classes=10).train()
        set_gate_noise(model, 0.0)
        model.set_execution(mode)
        x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, routing = model(x, return_routing=True)
        logits.float().sum().backward()
        grad = model.gated_blocks[0].gate.fc_gate.weight.grad
        results[mode] = (logits.float().detach(), grad.clone())
    (lg, gg), (ld, gd) = results["grouped"], results["dense"]
    assert (lg - ld).abs().max().item() <= 0.05 * ld.abs().max().item()
    assert (gg - gd).abs().max().item() <= 0.05 * gd.abs().max().item() + 1e-6
