"""Leave-documents-out transfer of the quality budget and the held-out budget scope, against plain
references on a tiny model: folds by hand, the fold's search on hand-cut tokens and statistics,
the held-out increase from per-token losses, the margin from the textbook t bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaptk.calibrate import (
    BUDGET_SCOPES,
    BudgetNotMetError,
    CalibrateConfig,
    CalibrationError,
    QualityBudget,
    calibrate,
    collect_router_stats,
    leave_documents_out,
    quality_constrained,
)
from adaptk.calibrate.collect import LayerRouting, RouterStats
from adaptk.calibrate.transfer import Fold, Transfer, assign_folds, fit_margin, select_stats
from adaptk.measure import WindowConfig, measure
from adaptk.routing import FixedTopK
from calibrate.helpers import controlled_mixtral, random_ids

BUDGET = QualityBudget(max_ppl_increase=0.01, confidence=0.9)
COMMON = dict(window=32, max_tokens=384, quality_tokens=192, max_passes=14)


@pytest.fixture(scope="module")
def model():
    return controlled_mixtral(seed=1)


def _documents(n: int, sizes: list[int]) -> torch.Tensor:
    """Document ids of n tokens: pieces of the given sizes, documents taking turns (as in a spread sample)."""
    out, d = [], 0
    while len(out) < n:
        out += [d] * sizes[d % len(sizes)]
        d = (d + 1) % 6
    return torch.tensor(out[:n])


def test_assign_folds_keeps_documents_whole_and_balances_the_search_tokens():
    docs = _documents(384, [40, 25, 60])
    fold, how = assign_folds(docs, 384, 192, 4)
    assert how == "6 documents in 4 folds"
    for d in docs.unique():  # a document lies in one fold
        assert fold[docs == d].unique().numel() == 1
    assert sorted(fold.unique().tolist()) == [0, 1, 2, 3]
    in_q = [int((fold[:192] == f).sum()) for f in range(4)]
    assert min(in_q) > 0 and max(in_q) < 192 * 0.6  # every fold leaves most search tokens to the rest
    assert torch.equal(assign_folds(docs, 384, 192, 4)[0], fold)  # deterministic
    assert assign_folds(docs, 384, 192, 10)[0].unique().numel() == 6  # at most one fold per document


def test_assign_folds_without_documents_cuts_the_quality_tokens():
    fold, how = assign_folds(None, 300, 200, 4)
    assert "contiguous" in how
    assert fold[:200].tolist() == [i * 4 // 200 for i in range(200)]
    assert (fold[200:] == -1).all()  # beyond the search's tokens: always in the rest
    same, _ = assign_folds(torch.zeros(300, dtype=torch.long), 300, 200, 4)  # one document: the same
    assert torch.equal(same, fold)
    with pytest.raises(CalibrationError, match="one per token"):
        assign_folds(torch.zeros(10, dtype=torch.long), 300, 200, 4)


def test_select_stats_matches_plain_indexing():
    g = torch.Generator().manual_seed(0)
    lay = LayerRouting(0, 8, 2, torch.rand(10, generator=g), torch.rand(10, 8, generator=g),
                       torch.arange(8))
    keep = torch.tensor([True, False] * 5)
    sub = select_stats(RouterStats([lay], 10), keep)
    assert sub.tokens == 5
    assert sub.layers[0].entropy.tolist() == [lay.entropy[i].item() for i in range(0, 10, 2)]
    assert sub.layers[0].ranked.tolist() == [lay.ranked[i].tolist() for i in range(0, 10, 2)]


def test_fit_margin_is_the_one_sided_t_prediction_bound_of_a_gap_and_never_negative():
    gaps = [0.004, -0.001, 0.006, 0.002]
    mean, sd = np.mean(gaps), np.std(gaps, ddof=1)
    t_95_3 = 2.3533634  # Student t, 0.95 quantile, 3 degrees of freedom (a printed table)
    assert fit_margin(gaps, 0.95) == pytest.approx(mean + t_95_3 * sd * math.sqrt(1 + 1 / 4), rel=1e-6)
    assert fit_margin(gaps, None) == pytest.approx(mean)
    assert fit_margin([-0.01, -0.012, -0.011], 0.95) == 0.0  # every gap well below 0
    assert fit_margin([0.003], 0.95) == pytest.approx(0.003)
    with pytest.raises(CalibrationError, match="no fold"):
        fit_margin([], 0.95)


def test_leave_documents_out_against_a_fold_done_by_hand(model):
    ids = random_ids(384, seed=4)
    docs = _documents(384, [40, 25, 60])
    stats = collect_router_stats(model, ids, window=32, max_tokens=384)
    tr = leave_documents_out(model, ids, stats, BUDGET, documents=docs, k_values=(1, 2), window=32,
                             quality_tokens=192, n_folds=3, max_passes=14)
    assert isinstance(tr, Transfer) and len(tr.folds) == 3 and tr.folds_by == "6 documents in 3 folds"
    fold_of, _ = assign_folds(docs, 384, 192, 3)
    native = FixedTopK(2)
    for f in tr.folds:
        assert f.ok, f.note
        held_docs = set(docs[fold_of == f.index].tolist())
        # the rest, cut by hand: its tokens in order and its routing statistics, token by token
        rest = [i for i in range(384) if docs[i].item() not in held_docs]
        rest_q = ids[[i for i in rest if i < 192]]
        rest_stats = RouterStats([LayerRouting(lay.index, lay.num_experts, lay.native_k, lay.entropy[rest],
                                               lay.ranked[rest], lay.expert_counts) for lay in stats.layers],
                                 tokens=len(rest))
        w = min(32, rest_q.numel())
        ref = quality_constrained(model, rest_q, rest_stats, BUDGET, k_values=(1, 2), cfg=WindowConfig(w, w),
                                  max_passes=14)
        assert (f.value, f.upper, f.average_k) == (ref.value, ref.upper, ref.average_k)
        assert f.upper <= BUDGET.limit and f.search_tokens == rest_q.numel()
        # the held-out increase from per-token losses of every held-out token, paired with native
        held = ids[[i for i in range(384) if docs[i].item() in held_docs]]
        hw = WindowConfig(min(32, held.numel()), min(32, held.numel()))
        d = measure(model, ref.policy, held, hw).ppl.token_loss.double() - measure(model, native, held, hw).ppl.token_loss.double()
        assert f.heldout == pytest.approx(math.expm1(float(d.nanmean())), rel=1e-9, abs=1e-12)
        assert f.heldout_tokens == held.numel() and f.documents == len(held_docs)
        assert f.gap == f.heldout - f.upper
    assert tr.exceedances == pytest.approx([f.heldout - 0.01 for f in tr.folds])
    ex = tr.to_dict()["exceedance"]
    assert ex["max"] == pytest.approx(max(tr.exceedances)) and ex["folds"] == 3


def _heldout(model, ids, docs, **kw):
    cfg = CalibrateConfig("quality", max_ppl_increase=0.01, confidence=0.9, **{**COMMON, **kw})
    return calibrate(model, ids, cfg, documents=docs)


def test_scope_calibration_is_the_search_of_before(model):
    ids, docs = random_ids(384, seed=5), _documents(384, [40, 25, 60])
    out = _heldout(model, ids, docs, budget_scope="calibration")
    stats = collect_router_stats(model, ids, window=32, max_tokens=384)
    ref = quality_constrained(model, ids[:192], stats, BUDGET, k_values=(1, 2), cfg=WindowConfig(32, 32),
                              max_passes=14)
    assert out.policy.to_dict() == ref.policy.to_dict()
    c = out.policy_file.calibration
    assert c.forward_passes == 1 + ref.forward_passes
    assert set(c.targets) == {"max_ppl_increase", "confidence", "per_layer", "k_values"}  # no new keys
    assert set(c.measured) == {"metric", "value", "upper_bound", "confidence", "measured_average_k", "weights"}


def test_scope_heldout_records_margin_and_estimate_and_holds_by_construction(model):
    ids, docs = random_ids(384, seed=5), _documents(384, [40, 25, 60])
    out = _heldout(model, ids, docs)
    c = out.policy_file.calibration
    m = c.measured
    assert c.targets["budget_scope"] == "heldout" and c.targets["heldout_folds"] == 4
    assert m["budget_scope"] == "heldout" and m["margin"] >= 0
    assert m["searched_budget"] == pytest.approx(max(0.0, 0.01 - m["margin"]))
    assert m["upper_bound"] <= m["searched_budget"] + 1e-12
    gaps = [f["heldout"] - f["upper"] for f in m["transfer"]["folds"] if f["note"] is None]
    assert len(gaps) >= 2
    assert m["heldout_estimate"] == pytest.approx(m["upper_bound"] + np.mean(gaps))
    assert m["heldout_upper_bound"] <= 0.01 + 1e-12  # the bound the margin was fitted for
    assert m["calibration_scope"]["upper_bound"] <= 0.01
    # stated-budget search + one search (and two held-out passes) per fold (+ the tightened search)
    assert c.forward_passes > 1 + 4 * 2


def test_a_positive_margin_tightens_the_search(model, monkeypatch):
    ids, docs = random_ids(384, seed=5), _documents(384, [40, 25, 60])
    monkeypatch.setattr(Transfer, "margin", lambda self: 0.008)
    out = _heldout(model, ids, docs)
    m = out.policy_file.calibration.measured
    assert m["margin"] == 0.008 and m["searched_budget"] == pytest.approx(0.002)
    assert m["upper_bound"] <= 0.002 + 1e-12
    assert m["measured_average_k"] >= m["calibration_scope"]["measured_average_k"] - 1e-9
    monkeypatch.setattr(Transfer, "margin", lambda self: 1.0)  # a margin past the budget: searched at 0
    tight = _heldout(model, ids, docs).policy_file.calibration.measured
    assert tight["searched_budget"] == 0.0 and tight["upper_bound"] <= 1e-12


def test_no_documents_fall_back_to_stretches_and_no_fold_is_an_error(model):
    ids = random_ids(384, seed=5)
    m = _heldout(model, ids, None).policy_file.calibration.measured
    assert "contiguous" in m["transfer"]["folds_by"] and m["margin"] >= 0
    with pytest.raises(BudgetNotMetError, match="held-out"):
        _heldout(model, ids, None, quality_tokens=3, window=2)  # folds of one token: nothing to search on


def test_a_bad_scope_names_the_choices():
    assert BUDGET_SCOPES == ("heldout", "calibration")
    with pytest.raises(CalibrationError, match="heldout, calibration"):
        CalibrateConfig("quality", max_ppl_increase=0.01, budget_scope="train")
    with pytest.raises(CalibrationError, match="heldout_folds"):
        CalibrateConfig("quality", max_ppl_increase=0.01, heldout_folds=1)


def test_a_fold_without_a_policy_is_recorded_and_left_out_of_the_margin():
    ok = Fold(0, 2, 100, 300, value=0.004, upper=0.008, average_k=1.5, heldout=0.011, heldout_average_k=1.5)
    skipped = Fold(1, 1, 50, 0, note="too few tokens left to search on or to hold out")
    tr = Transfer("ppl_increase", 0.01, 0.95, "3 documents in 2 folds", [ok, skipped])
    assert tr.gaps == pytest.approx([0.003]) and tr.exceedances == pytest.approx([0.001])
    assert tr.margin() == pytest.approx(0.003)  # one fold: its gap, no spread to bound
    d = tr.to_dict()
    assert d["folds"][1]["heldout"] is None and d["folds"][1]["note"].startswith("too few")
    assert d["exceedance"] == {"mean": pytest.approx(0.001), "max": pytest.approx(0.001), "over_budget": 1, "folds": 1}
