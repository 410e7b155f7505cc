"""The gate-pattern histogram in every gated run's metrics (#32: is the routing per image?)."""

from __future__ import annotations

import torch

import dmnn
from dmnn.data import load_dataset
from dmnn.evaluation.metrics import collect, gate_patterns, summarize_record


def test_histogram_of_hand_set_gates():
    # 20 images, two gated blocks (N = 2) and an always-on one (None). Patterns over (b0, b2):
    # A = (10, 01) for 12 images, B = (01, 01) for 7, C = (11, 11) for 1.
    a, b, c = [1, 0, 0, 1], [0, 1, 0, 1], [1, 1, 1, 1]
    rows = torch.tensor([a] * 12 + [b] * 7 + [c], dtype=torch.uint8)
    hist = gate_patterns([rows[:, :2], None, rows[:, 2:]])
    assert hist["distinct"] == 3
    assert hist["at_least_5pct"] == 3  # C is exactly 1 / 20 = 5 %
    assert hist["top_shares"] == [0.6, 0.35, 0.05]
    # block 0 alone: (1,0) × 12, (0,1) × 7, (1,1) × 1
    assert gate_patterns([rows[:, :2]], head=1)["top_shares"] == [0.6]


def test_static_routing_reads_as_one_pattern():
    hist = gate_patterns([torch.ones(8, 2, dtype=torch.uint8), torch.zeros(8, 1)])
    assert hist == {"distinct": 1, "at_least_5pct": 1, "top_shares": [1.0]}


def test_summary_of_a_gated_model_carries_the_histogram():
    data = load_dataset("digits", max_test_samples=24)
    model = dmnn.create_model("dmnn_resnet20", in_chans=1, num_classes=10).eval()
    record = collect(model, data.test, torch.device("cpu"))
    summary = summarize_record(record, model, data.input_size)
    hist = summary["gate_patterns"]
    assert hist == gate_patterns(record.gates)
    shares = hist["top_shares"]
    assert 1 <= hist["distinct"] <= 24 and shares == sorted(shares, reverse=True)
    assert sum(shares) <= 1 + 1e-6
    static = dmnn.create_model("resnet20", in_chans=1, num_classes=10).eval()
    record = collect(static, data.test, torch.device("cpu"))
    assert "gate_patterns" not in summarize_record(record, static, data.input_size)
