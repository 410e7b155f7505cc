"""LC-Net's equations (3–5) pinned by hand; channel skipping measured by the FLOP counter."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import dmnn
from dmnn.methods.lcnet import LCGate, LCLoss, leaky_relu1, relu1
from dmnn.train.config import resolve_config
from dmnn.train.engine import train


def test_eqn5_relu1_and_its_leaky_training_form():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0])
    assert relu1(x).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert leaky_relu1(x, 0.1).tolist() == pytest.approx([-0.1, 0.0, 0.5, 1.0, 1.1])


def test_eqn3_4_saliences_by_hand():
    gate = LCGate(2, 3).eval()
    with torch.no_grad():
        gate.l_fc.weight.copy_(torch.tensor([[1.0, -1.0]]))
        gate.l_fc.bias.fill_(0.0)
        gate.c_fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
        gate.c_fc.bias.copy_(torch.tensor([0.0, 0.5, 0.2]))
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = 0.75  # GAP z = [0.75, 0.25]
    x[0, 1] = 0.25
    block, channel = gate.saliences(x)
    # S_L = ReLU-1(0.75 − 0.25) = 0.5; S_C = ReLU-1([0.75, 0.75, −0.55]) = [0.75, 0.75, 0]
    assert block.item() == pytest.approx(0.5)
    assert channel[0].tolist() == pytest.approx([0.75, 0.75, 0.0])
    d = gate(x)
    assert d.executed.item() == 1.0 and d.inactive.item() == 1.0


def switch(model, block_index, off_channels, block_on=True):
    """Make gates input-independent: block ``block_index`` has ``off_channels`` off."""
    with torch.no_grad():
        for i, b in enumerate(model.blocks):
            b.gate.l_fc.weight.zero_()
            b.gate.c_fc.weight.zero_()
            b.gate.l_fc.bias.fill_(1.0 if (block_on or i != block_index) else -1.0)
            bias = torch.ones(b.gate.channels)
            if i == block_index:
                bias[off_channels] = -1.0
            b.gate.c_fc.bias.copy_(bias)


def counted(model, x):
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        _, routing = model(x, return_routing=True)
    return counter.get_total_flops() / 2, routing


def test_inactive_channels_are_really_skipped_by_hand():
    model = dmnn.create_model("lcnet_resnet20").eval()
    table = model.macs_table()
    # block 0: 16 → 16 channels at 32×32, each channel = one 3×3 filter of conv1 + one input of
    # conv2: 2 · 16 · 9 · 32 · 32 = 294,912 MACs
    assert table.channel_macs[0] == 294_912
    switch(model, 0, [1, 5, 9, 13])
    macs, routing = counted(model, torch.randn(1, 3, 32, 32))
    assert routing.macs.item() == table.full - 4 * 294_912 == macs
    switch(model, 0, [], block_on=False)  # S_L = 0: the whole block is skipped
    macs, routing = counted(model, torch.randn(1, 3, 32, 32))
    assert macs == routing.macs.item() == table.full - sum(table.paths[0])


def test_batches_compute_the_union_of_their_rows_channels():
    model = dmnn.create_model("lcnet_resnet20").eval()
    switch(model, 0, [2, 3])
    x = torch.randn(3, 3, 32, 32)
    macs, routing = counted(model, x)
    assert macs == routing.macs.sum().item()  # every row has the same channels off
    with torch.no_grad():  # now make the off set depend on the input: unions grow
        model.blocks[0].gate.c_fc.weight.normal_(0, 5.0)
    macs, routing = counted(model, x)
    assert macs >= routing.macs.sum().item()


def test_loss_l1_terms_and_adaptive_weights():
    model = dmnn.create_model("lcnet_resnet20").train()
    logits, r = model(torch.randn(4, 3, 32, 32), return_routing=True)
    loss = LCLoss(0.3, step=0.5)
    before = loss.lam_channel
    out = loss(logits, r, torch.zeros(4, dtype=torch.long))
    assert out.parts["l1_block"].item() > 0.5  # saliences start near 1
    ratio = (r.macs.mean() / r.table.full).item()
    assert loss.lam_channel == pytest.approx(before + 0.5 * (ratio - 0.3))  # above target: up
    out.total.backward()
    assert model.blocks[3].gate.c_fc.bias.grad.abs().sum() > 0
    other = LCLoss(0.3)
    other.load_state_dict(json.loads(json.dumps(loss.state_dict())))
    assert other.lam_block == loss.lam_block and other.step == 0.5  # resumes with its own η


def test_penalty_is_l1_while_lambda_is_positive_and_signed_below_zero():
    s = [torch.tensor([[-0.5, 1.0]]), torch.tensor([[0.25, 0.25]])]
    # per block: mean|S| = 0.75 and 0.25 -> 0.5; signed: 0.25 and 0.25 -> 0.25
    assert LCLoss.penalty(s, 0.01).item() == pytest.approx(0.5)
    assert LCLoss.penalty(s, -0.01).item() == pytest.approx(0.25)
    # a negative λ pulls a salience in the leaky region up (its gradient is λ·d mean/dS < 0)
    x = torch.tensor([[-0.5, 1.0]], requires_grad=True)
    (-0.01 * LCLoss.penalty([x], -0.01)).backward()
    assert x.grad[0, 0] < 0  # gradient descent raises it


def test_lambda_goes_negative_below_target_and_holds_still_at_eval():
    model = dmnn.create_model("lcnet_resnet20").train()
    logits, r = model(torch.randn(2, 3, 32, 32), return_routing=True)
    loss = LCLoss(1.0, lam_block=0.001, lam_channel=0.001, step=0.1)
    loss(logits, r, torch.zeros(2, dtype=torch.long))
    assert loss.lam_block < 0  # ratio < 1.0 = target: reward compute
    lam = loss.lam_block
    with torch.no_grad():
        logits, r = model(torch.randn(2, 3, 32, 32), return_routing=True)
    loss(logits, r, torch.zeros(2, dtype=torch.long))
    assert loss.lam_block == lam


def test_lcnet_trains_through_the_engine(tmp_path):
    cfg = resolve_config(None, None, {
        "dataset": "digits", "model": "lcnet_resnet20", "batch_size": 32, "epochs": 2,
        "max_train_samples": 64, "max_test_samples": 32, "target_rate": 0.5,
    })
    final = train(cfg, tmp_path / "run", progress=False)
    assert "train_loss_l1_channel" in (tmp_path / "run" / "metrics.jsonl").read_text()
    assert 0.0 < final["macs_ratio"] <= 1.0


def test_lcnet_is_registered_for_resnets_only():
    names = dmnn.list_models("lcnet")
    assert "lcnet_resnet56" in names and not any("mobilenet" in n for n in names)


def test_eval_record_counts_executed_blocks_not_saliences(tmp_path):
    from dmnn.data import load_dataset
    from dmnn.evaluation.metrics import collect, summarize_record

    data = load_dataset("digits", max_test_samples=16)
    model = dmnn.create_model("lcnet_resnet20", in_chans=1).eval()
    with torch.no_grad():
        for b in model.blocks:
            b.gate.l_fc.weight.zero_()
            b.gate.l_fc.bias.fill_(0.6)  # every block runs, scaled by 0.6
    record = collect(model, data.test, torch.device("cpu"))
    summary = summarize_record(record, model, data.input_size)
    assert all(rate == 1.0 for rate in summary["exec_rate_block"].values())


def test_dual_step_scales_with_the_run_length():
    from dmnn.methods.lcnet import dual_step_for

    assert dual_step_for(7800) == pytest.approx(6.0 / 7800)  # cpu-fast: 20 epochs × 390 steps
    assert dual_step_for(330) == pytest.approx(6.0 / 330)
    cfg = resolve_config("cpu-fast", None, {"model": "lcnet_resnet20"})
    assert cfg.method.build_loss(cfg, 20 * 390).step == pytest.approx(6.0 / 7800)
    short = resolve_config(None, None, {"model": "lcnet_resnet20", "epochs": 15})
    assert short.method.build_loss(short, 15 * 22).step == pytest.approx(6.0 / 330)
    with pytest.raises(ValueError, match="total_steps"):
        dual_step_for(0)
