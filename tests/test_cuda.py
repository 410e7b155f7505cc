"""CUDA checks, skipped without a GPU (scripts/bench/device_check.sh runs them on one)."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from dmnn import create_model, force_gates
from dmnn.train.config import resolve_config
from dmnn.train.engine import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def mixed_pattern(model, batch: int, device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 2, (batch, b.num_sub_blocks), generator=g).float().to(device)
            for b in model.blocks]


@pytest.mark.parametrize("name", ["dmnn_resnet50", "dmnn_mobilenetv2", "lcnet_resnet50"])
def test_sparse_equals_masked_dense_on_cuda(name):
    model = create_model(name).eval().cuda()
    x = torch.randn(8, 3, 224, 224, device="cuda")
    outs = {}
    with torch.inference_mode(), force_gates(model, mixed_pattern(model, 8, "cuda")):
        for mode in ("sparse", "dense"):
            model.set_execution(mode)
            outs[mode] = model(x)
    scale = outs["dense"].abs().max().item()
    assert (outs["sparse"] - outs["dense"]).abs().max().item() <= 1e-4 * max(1.0, scale)


def test_host_syncs_per_block():
    """The sparse executor waits for the device once per gated block (the row counts)."""
    model = create_model("dmnn_resnet50").eval().cuda()
    x = torch.randn(8, 3, 224, 224, device="cuda")
    pattern = mixed_pattern(model, 8, "cuda")
    with torch.inference_mode(), force_gates(model, pattern):
        model.set_execution("sparse")
        model(x)  # warm-up
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                model(x)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    print(f"host syncs in one sparse forward: {syncs} for {len(model.gated_blocks)} gated blocks")
    assert syncs <= len(model.gated_blocks)


def test_bf16_training_on_cuda_keeps_data_on_the_device(tmp_path):
    cfg = resolve_config("digits", None, {"device": "cuda", "amp": "bf16", "epochs": 2,
                                          "channels_last": True})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    batch = next(iter(trainer.data.train))
    assert batch.images.device.type == "cuda"  # loaded and augmented there
    trainer.data.train.set_epoch(0)
    final = trainer.run()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert all(math.isfinite(json.loads(s)["train_loss"]) for s in lines)
    assert final["top1"] > 0.3
