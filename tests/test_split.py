"""§3.1: sub-block widths keep eqn 2 ≈ eqn 1."""

import pytest

import dmnn
from dmnn.network.split import bottleneck_params, bottleneck_sub_width, even_split


def test_resnet50_widths_are_the_resnext_group_widths():
    assert [bottleneck_sub_width(c, 2) for c in (64, 128, 256, 512)] == [40, 80, 160, 320]
    assert bottleneck_sub_width(64, 4) == 24
    blocks = dmnn.create_model("dmnn_resnet50", num_sub_blocks=4).blocks
    assert sorted({b.sub_block_width for b in blocks}) == [24, 48, 96, 192]
    blocks = dmnn.create_model("dmnn_resnet50", num_sub_blocks=2).blocks
    assert sorted({b.sub_block_width for b in blocks}) == [40, 80, 160, 320]
    assert bottleneck_sub_width(64, 1) == 64


def test_bottleneck_rule_matches_eqn1_within_a_few_percent():
    # hand check, C_in = C_out = 256, C = 64: eqn 1 = 256·64 + 9·64² + 64·256 = 69632
    assert bottleneck_params(256, 64, 256) == 69632
    # eqn 2 with N = 2, Ĉ = 40: 2·(256·40 + 9·40² + 40·256) = 69760 (+0.18 %)
    assert bottleneck_params(256, 40, 256, n=2) == 69760
    # eqn 3 (the naive Ĉ = C/N) loses the 3×3 half: 256·64 + 9·64²/2 + 64·256 = 51200
    assert bottleneck_params(256, 32, 256, n=2) == 51200
    for n in (2, 3, 4, 8):
        for c in (64, 128, 256):
            w = bottleneck_sub_width(c, n)
            ratio = bottleneck_params(4 * c, w, 4 * c, n) / bottleneck_params(4 * c, c, 4 * c)
            assert abs(ratio - 1) < 0.03, (n, c, ratio)


def test_basic_block_split_is_exact():
    assert even_split(16, 2, "x") == 8
    static = dmnn.create_model("resnet20")
    dyn = dmnn.create_model("dmnn_resnet20", num_sub_blocks=4)
    for s, d in zip(static.blocks, dyn.blocks, strict=True):
        conv = lambda m: sum(p.numel() for n, p in m.named_parameters() if p.dim() == 4)  # noqa: E731
        assert sum(conv(p) for p in d.paths) == conv(s.paths[0])


def test_mobilenetv2_sub_blocks_split_convs_exactly():
    static = dmnn.create_model("mobilenetv2")
    dyn = dmnn.create_model("dmnn_mobilenetv2", num_sub_blocks=2)
    for s, d in zip(static.blocks, dyn.blocks, strict=True):
        conv = lambda m: sum(p.numel() for p in m.parameters() if p.dim() == 4)  # noqa: E731
        assert sum(conv(p) for p in d.paths) == conv(s.paths[0])
        assert d.sub_block_width * 2 == s.sub_block_width


@pytest.mark.parametrize(
    "name,n", [("dmnn_resnet20", 3), ("dmnn_mobilenetv2", 3), ("dmnn_resnet56", 32)]
)
def test_width_that_n_cannot_split_names_num_sub_blocks(name, n):
    with pytest.raises(ValueError, match=f"num_sub_blocks={n} cannot split"):
        dmnn.create_model(name, num_sub_blocks=n)


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_n_below_one_or_not_integer_is_rejected(n):
    with pytest.raises(ValueError, match="num_sub_blocks"):
        dmnn.create_model("dmnn_resnet20", num_sub_blocks=n)
