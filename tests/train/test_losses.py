import math

import torch

from adaptk.train.losses import entropy_regulariser, router_z_loss, routing_entropy, switch_balance_loss


def _ref_balance(probs, indices, n):
    t, k = indices.shape
    total = 0.0
    for i in range(n):
        f = sum(1 for row in indices.tolist() for e in row if e == i) / (t * k)
        p = sum(float(probs[r, i]) for r in range(t)) / t
        total += f * p
    return n * total


def _ref_z(logits):
    return sum(math.log(sum(math.exp(float(x)) for x in row)) ** 2 for row in logits) / logits.shape[0]


def test_switch_balance_loss_matches_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(13, 6, generator=g)
    probs = logits.softmax(-1)
    idx = probs.topk(2, dim=-1).indices
    assert math.isclose(float(switch_balance_loss(probs, idx, 6)), _ref_balance(probs, idx, 6), rel_tol=1e-5)


def test_switch_balance_loss_uniform_is_one_and_has_gradient():
    probs = torch.full((8, 4), 0.25, requires_grad=True)
    idx = torch.arange(8).remainder(4).view(8, 1)
    loss = switch_balance_loss(probs, idx, 4)
    assert math.isclose(float(loss.detach()), 1.0, rel_tol=1e-6)
    loss.backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0


def test_z_loss_matches_reference():
    logits = torch.randn(7, 5, generator=torch.Generator().manual_seed(1)) * 3
    assert math.isclose(float(router_z_loss(logits)), _ref_z(logits), rel_tol=1e-5)


def test_entropy_and_regulariser():
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    h = routing_entropy(probs)
    assert math.isclose(float(h[0]), math.log(4), rel_tol=1e-6) and abs(float(h[1])) < 1e-6
    assert math.isclose(float(routing_entropy(probs, normalised=True)[0]), 1.0, rel_tol=1e-6)
    assert math.isclose(float(entropy_regulariser(probs)), -math.log(4) / 2, rel_tol=1e-6)
