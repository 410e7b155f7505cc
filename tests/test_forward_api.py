"""model(x) returns logits; model(x, return_routing=True) also returns the routing record."""

import pytest
import torch

import dmnn


def test_plain_call_returns_logits():
    model = dmnn.create_model("dmnn_resnet20", num_classes=10)
    out = model(torch.randn(3, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (3, 10)


def test_routing_record_in_training():
    model = dmnn.create_model("dmnn_resnet32", num_sub_blocks=4, num_categories=3).train()
    logits, r = model(torch.randn(5, 3, 32, 32), return_routing=True)
    assert logits.shape == (5, 10)
    assert len(r.gates) == len(model.blocks) == 15
    for g, c in zip(r.gates, r.category_logits, strict=True):
        assert g.shape == (5, 4) and g.requires_grad
        assert set(g.unique().tolist()) <= {0.0, 1.0}
        assert c.shape == (5, 3)
    assert r.macs.shape == (5,) and r.macs.requires_grad
    expected = r.table.static + sum(
        (g.detach().double() * torch.tensor(p, dtype=torch.float64)).sum(1)
        for g, p in zip(r.gates, r.table.paths, strict=True)
    )
    assert torch.allclose(r.macs.detach(), expected)
    assert r.stages == [0] * 5 + [1] * 5 + [2] * 5


def test_static_model_routing_reports_full_macs():
    model = dmnn.create_model("resnet20").eval()
    _, r = model(torch.randn(3, 3, 32, 32), return_routing=True)
    assert r.gates == [None] * 9
    assert r.macs.tolist() == [float(model.macs_table().full)] * 3


def test_in_chans_is_configurable():
    model = dmnn.create_model("dmnn_resnet20", in_chans=1)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("shape,match", [
    ((3, 32, 32), "4-D"), ((2, 1, 32, 32), "in_chans=3"), ((1, 2, 3, 32, 32), "4-D"),
])
def test_wrong_input_rank_or_channels(shape, match):
    model = dmnn.create_model("dmnn_resnet20")
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape))


@pytest.mark.parametrize("kwargs,arg", [({"num_classes": 0}, "num_classes"),
                                        ({"in_chans": 0}, "in_chans")])
def test_bad_head_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        dmnn.create_model("dmnn_resnet20", **kwargs)
