import torch

from adaptk.train import controls as C


def test_capacity_keep_counts_first_come_first_served():
    # 6 tokens, top-2, 3 experts, capacity 3: expert 0 is every token's first choice
    idx = torch.tensor([[0, 1], [0, 2], [0, 1], [0, 2], [0, 1], [1, 2]])
    keep = C.capacity_keep(idx, 3, capacity=3)
    # slot-major: 1st choices 0,0,0,0,0,1 -> tokens 0-2 keep expert 0, tokens 3,4 dropped
    assert keep[:, 0].tolist() == [True, True, True, False, False, True]
    # 2nd choices: expert 1 already has 1 (token 5), then tokens 0,2,4 -> token 4 dropped
    assert keep[:, 1].tolist() == [True, True, True, True, False, True]
    assert int((~keep).sum()) == 3
    for e in range(3):
        assert int(((idx == e) & keep).sum()) <= 3


def test_expert_capacity_formula():
    assert C.expert_capacity(100, 2, 8, 1.0) == 25
    assert C.expert_capacity(100, 2, 8, 1.25) == 32


def test_schedules():
    assert C.temperature(0, 100, 2.0, 1.0) == 2.0 and C.temperature(100, 100, 2.0, 1.0) == 1.0
    ks = [C.sparsity_k(s, 2, 8, dense_steps=10, sparsify_steps=6) for s in (0, 9, 10, 13, 16, 50)]
    assert ks == [8, 8, 8, 5, 2, 2]


def test_aux_free_bias_moves_against_load():
    bias = torch.zeros(4)
    new = C.aux_free_bias_update(bias, torch.tensor([10, 0, 5, 5]), 0.1)
    assert torch.allclose(new, torch.tensor([-0.1, 0.1, 0.0, 0.0]))


def test_noise_functions():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(100, 4)
    j = C.input_jitter(x, 0.1, g)
    assert float(j.min()) >= 0.9 and float(j.max()) <= 1.1 and not torch.equal(j, x)
    assert C.input_jitter(x, 0.0) is x
    n = C.logit_noise(torch.zeros(1000, 4), 0.5, g)
    assert 0.4 < float(n.std()) < 0.6
