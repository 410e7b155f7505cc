"""§3.2, eqns 5–8, each pinned by a hand-computed case."""

import math

import pytest
import torch
import torch.nn.functional as F

import dmnn
from dmnn.methods.dmnn import DMNNController
from dmnn.network.gumbel import on_gates, on_probs, straight_through_gumbel


def hand_controller(first: bool = False, prev_state: bool = True) -> DMNNController:
    c = DMNNController(2, 1, hidden_dim=2, first=first, prev_state=prev_state)
    with torch.no_grad():
        c.fc_in.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        c.fc_in.bias.copy_(torch.tensor([0.0, 0.5]))
        if c.fc_prev is not None:
            c.fc_prev.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
            c.fc_prev.bias.copy_(torch.tensor([0.0, -1.0]))
        c.fc_gate.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
        c.fc_gate.bias.copy_(torch.tensor([0.1, 0.2]))
    return c.eval()


def hand_input() -> torch.Tensor:
    x = torch.ones(1, 2, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # channel means: z = [2.5, 1.0] (eqn 5)
    return x


def test_eqn5_6_7_hidden_state_by_hand():
    c = hand_controller()
    # eqn 6: V = ReLU(W1 z + b1) = ReLU([2.5, -1 + 0.5]) = [2.5, 0]
    # eqn 7: h' = ReLU(W2 h_prev + b2) = ReLU([1 + 2, 2·2 − 1]) = [3, 3]; h = V + h' = [5.5, 3]
    h = c.hidden(hand_input(), torch.tensor([[1.0, 2.0]]))
    assert torch.allclose(h, torch.tensor([[5.5, 3.0]]))
    # the ReLU of eqn 7 clamps a negative previous-state projection: W2·[-1, 0] + b2 = [-1, -1]
    h = c.hidden(hand_input(), torch.tensor([[-1.0, 0.0]]))
    assert torch.allclose(h, torch.tensor([[2.5, 0.0]]))


def test_first_controller_and_prev_state_off_use_h_equals_v():
    for c in (hand_controller(first=True), hand_controller(prev_state=False)):
        assert c.fc_prev is None
        h = c.hidden(hand_input(), torch.tensor([[1.0, 2.0]]))
        assert torch.allclose(h, torch.tensor([[2.5, 0.0]]))


def test_eqn8_eval_is_argmax_of_w3_h_plus_b3():
    c = hand_controller()
    d = c(hand_input(), torch.tensor([[1.0, 2.0]]))
    # g = W3 h + b3 = [0·5.5 + 0.1, 5.5 − 3 + 0.2] = [0.1, 2.7] -> on
    assert torch.allclose(d.extras["logits"], torch.tensor([[[0.1, 2.7]]]))
    assert d.gates.tolist() == [[1.0]]
    assert d.probs is None  # not on the eval latency path; on demand:
    assert d.on_probs().item() == pytest.approx(1 / (1 + math.exp(-2.6)), rel=1e-6)
    assert d.category_logits is None


def test_eqn8_training_gumbel_hard_forward_soft_gradient():
    g = torch.tensor([[0.2, 0.5]], requires_grad=True)  # [off, on]
    noise = torch.tensor([[1.0, 0.0]])
    hard, soft = straight_through_gumbel(g, tau=0.5, noise=noise)
    # (g + Δ)/τ = [2.4, 1.0]: softmax = [0.8022, 0.1978], argmax = off
    assert hard.tolist() == [[1.0, 0.0]]
    assert soft[0, 1].item() == pytest.approx(1 / (1 + math.exp(1.4)), rel=1e-5)
    hard[0, 1].backward()
    s = soft[0, 1].item()
    # straight-through: d hard_on / d g_on = s(1 − s)/τ, d hard_on / d g_off = −s(1 − s)/τ
    assert g.grad[0, 1].item() == pytest.approx(s * (1 - s) / 0.5, rel=1e-5)
    assert g.grad[0, 0].item() == pytest.approx(-s * (1 - s) / 0.5, rel=1e-5)


def test_gumbel_noise_flips_decisions_at_the_logistic_rate():
    # on iff g_on + Δ_on > g_off + Δ_off: a logistic event, P(on) = sigmoid(g_on − g_off)
    torch.manual_seed(1)
    logits = torch.tensor([0.0, 1.0]).expand(20000, 2)
    hard, _ = straight_through_gumbel(logits)
    assert hard[:, 1].mean().item() == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.015)


def test_eval_gate_is_the_argmax_with_ties_to_off():
    logits = torch.tensor([[0.3, 0.3], [0.1, 0.2], [0.5, -1.0]])
    assert on_gates(logits, training=False).tolist() == [0.0, 1.0, 0.0]
    assert on_probs(logits).tolist() == pytest.approx([0.5, 0.52497918, 0.18242552])


def test_gate_bias_starts_sub_blocks_mostly_on():
    model = dmnn.create_model("dmnn_resnet56").train()
    _, r = model(torch.randn(32, 3, 32, 32), return_routing=True)
    assert r.execution_rates().mean().item() > 0.75
    model = dmnn.create_model("dmnn_resnet56", gate_bias=-4.0).train()
    _, r = model(torch.randn(32, 3, 32, 32), return_routing=True)
    assert r.execution_rates().mean().item() < 0.25


def test_straight_through_gradients_reach_w1_w2_w3():
    model = dmnn.create_model("dmnn_resnet20", num_categories=0).train()
    logits = model(torch.randn(8, 3, 32, 32))
    F.cross_entropy(logits, torch.arange(8) % 10).backward()
    for i, block in enumerate(model.blocks):
        ctrl = block.gate
        assert ctrl.fc_in.weight.grad.abs().sum() > 0, f"W1 of block {i}"
        assert ctrl.fc_gate.weight.grad.abs().sum() > 0, f"W3 of block {i}"
        if i > 0:
            assert ctrl.fc_prev.weight.grad.abs().sum() > 0, f"W2 of block {i}"


def test_eval_is_deterministic_across_calls():
    model = dmnn.create_model("dmnn_resnet20").eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        a_logits, a = model(x, return_routing=True)
        b_logits, b = model(x, return_routing=True)
    assert torch.equal(a_logits, b_logits)
    for ga, gb, extra in zip(a.gates, b.gates, a.extras, strict=True):
        assert torch.equal(ga, gb)
        logits = extra["logits"]
        assert torch.equal(ga, (logits[..., 1] > logits[..., 0]).float())


def test_category_heads_run_only_in_training():
    model = dmnn.create_model("dmnn_resnet20", num_categories=5).train()
    _, r = model(torch.randn(4, 3, 32, 32), return_routing=True)
    assert all(c.shape == (4, 5) for c in r.category_logits)
    model.eval()
    _, r = model(torch.randn(4, 3, 32, 32), return_routing=True)
    assert all(c is None for c in r.category_logits)


@pytest.mark.parametrize("kwargs,arg", [
    ({"hidden_dim": 0}, "hidden_dim"), ({"num_categories": -1}, "num_categories"),
    ({"tau": 0.0}, "tau"),
])
def test_bad_controller_arguments_name_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        dmnn.create_model("dmnn_resnet20", **kwargs)


def test_noise_scale_zero_makes_training_decisions_deterministic_with_gradients():
    g = torch.tensor([[0.3, 0.1], [0.0, 0.4]], requires_grad=True)
    hard, _ = straight_through_gumbel(g, noise_scale=0.0)
    assert hard[:, 1].tolist() == [0.0, 1.0]  # the eval argmax
    hard[:, 1].sum().backward()
    assert (g.grad[:, 1] > 0).all()


def test_noise_schedule_holds_then_decays_to_final():
    from dmnn.network.gumbel import noise_schedule

    scales = [noise_schedule(e, 11, 0.5, 0.0) for e in range(11)]
    assert scales[:6] == [1.0] * 6 and scales[-1] == 0.0
    assert scales[6:] == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.0])
    assert noise_schedule(10, 11, 1.0, 0.0) == 1.0  # anneal_from 1: the paper's constant noise


@pytest.mark.parametrize("first", [False, True])
def test_inference_path_matches_the_autograd_path(first):
    c = hand_controller(first=first)
    state = torch.tensor([[1.0, 2.0]])
    x = torch.randn(5, 2, 3, 3)
    ref = c(x, state.expand(5, 2))  # grad enabled: the plain path
    with torch.inference_mode():
        fast = c(x, state.expand(5, 2))
    torch.testing.assert_close(fast.extras["logits"], ref.extras["logits"])
    torch.testing.assert_close(fast.state, ref.state)
    assert fast.gates.tolist() == ref.gates.tolist()
    with torch.no_grad():  # the hand case of eqn 8 through the inference path
        d = c(hand_input(), state)
    expected = [[[0.1, 2.7]]] if not first else [[[0.1, 2.5 + 0.2]]]
    torch.testing.assert_close(d.extras["logits"], torch.tensor(expected))


def test_inference_path_follows_weight_updates_and_moves():
    c = hand_controller()
    state = torch.tensor([[1.0, 2.0]])
    with torch.no_grad():
        before = c(hand_input(), state).extras["logits"]
        c.shift_on_logit(-3.0)  # in place: seen through the shared storage
        shifted = c(hand_input(), state)
        assert shifted.extras["logits"][0, 0, 1] == pytest.approx(before[0, 0, 1].item() - 3.0)
        assert shifted.gates.tolist() == [[0.0]]
        c.double()  # new storage: the plain views are rebuilt
        d = c(hand_input().double(), state.double())
        assert d.extras["logits"].dtype == torch.float64
        c.fc_in.weight.copy_(torch.zeros(2, 2))  # load_state_dict-style in-place copy
        d = c(hand_input().double(), state.double())
    c.fc_in.bias.data.zero_()
    with torch.no_grad():
        h = c(hand_input().double(), state.double()).state
    torch.testing.assert_close(h, torch.tensor([[3.0, 3.0]], dtype=torch.float64))  # V = 0


def test_eval_with_gradients_enabled_still_trains_the_controller():
    c = hand_controller()
    d = c(hand_input(), torch.tensor([[1.0, 2.0]]))
    d.extras["logits"].sum().backward()
    assert c.fc_in.weight.grad is not None and c.fc_gate.weight.grad.abs().sum() > 0
