"""The routing conventions of the transformers MoE families (transformers >= 5).

Each function mirrors the native router's code op for op; comments name the native source.
A new family that follows an existing convention is one more router class name in a tuple: the
first class of each tuple is the reference, and tests/models/test_families.py checks that every
other class listed has the same ``forward`` code in the installed transformers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaptk.models.spec import FastPath, MoEFamily, RouterScores
from adaptk.routing.select import Selection, filled

# ---- shared pieces --------------------------------------------------------------------------


def _kept(values: torch.Tensor, sel: Selection) -> torch.Tensor:
    """Zero the dropped slots. [T, K] -> [T, K]."""
    return filled(values, sel.drop, 0.0)


def _softmax_scores(logits: torch.Tensor, probs: torch.Tensor) -> RouterScores:
    return RouterScores(logits, probs, probs)


class RenormalisedTopK(FastPath):
    """Softmax top-k weights (a ``WeightsFn``) as a ``FastPath`` declares them: the probabilities
    of the kept experts, divided by their sum if ``renormalise`` (None: read
    ``router.norm_topk_prob``), cast to float32 / the logits' dtype / the hidden dtype (``out``).
    The same declaration is the family's fast path (``_softmax_topk``)."""

    def __call__(self, router, s: RouterScores, sel: Selection, hidden_dtype) -> torch.Tensor:
        # the candidates' probabilities: topk's values where it ranked the probabilities
        cand_probs = sel.top_probs if sel.top_probs is not None else s.probs.gather(1, sel.candidates)
        w = _kept(cand_probs, sel)  # [T, K]
        if self.renormalises(router):
            w = w / w.sum(dim=-1, keepdim=True)
        return self.cast(w, s.logits.dtype, hidden_dtype)


def _softmax_topk(renormalise: bool | None, out: str, flattens_hidden: bool = True) -> dict:
    """A linear-softmax top-k family's weights and fast path, from one declaration."""
    path = RenormalisedTopK(renormalise, out, linear_softmax=True, flattens_hidden=flattens_hidden)
    return {"weights": path, "fast_path": path}


def _logit_softmax(cast_to_hidden: bool):
    """Softmax over the kept experts' logits (GPT-OSS, GraniteMoE): dropped slots get -inf."""

    def weights(router, s: RouterScores, sel: Selection, hidden_dtype):
        top = filled(s.logits.gather(1, sel.candidates), sel.drop, float("-inf"))  # [T, K]
        if cast_to_hidden:  # GraniteMoE: softmax(top_k_logits, dim=-1).type_as(hidden_states)
            return torch.softmax(top, dim=-1).to(hidden_dtype)
        return torch.softmax(top, dim=1, dtype=top.dtype)  # GPT-OSS

    return weights


# ---- Mixtral, MiniMax: softmax in float32, top-k, always renormalised --------------------


def _mixtral_scores(router: nn.Module, hidden: torch.Tensor) -> RouterScores:
    hidden = hidden.reshape(-1, router.hidden_dim)
    logits = F.linear(hidden, router.weight)  # [T, N]
    probs = torch.nn.functional.softmax(logits.float(), dim=-1)
    return _softmax_scores(logits, probs)


MIXTRAL = MoEFamily(
    name="mixtral",
    router_classes=("MixtralTopKRouter", "MiniMaxTopKRouter"),
    scores=_mixtral_scores,
    **_softmax_topk(True, "float32"),
)

# ---- Qwen2-MoE, Qwen3-MoE, OLMoE: softmax, top-k, renormalised iff norm_topk_prob -------------


def _qwen_scores(router: nn.Module, hidden: torch.Tensor) -> RouterScores:
    hidden = hidden.reshape(-1, router.hidden_dim)
    logits = F.linear(hidden, router.weight)  # [T, N]
    probs = torch.nn.functional.softmax(logits, dtype=torch.float, dim=-1)
    return _softmax_scores(logits, probs)


QWEN = MoEFamily(
    name="qwen-moe",
    router_classes=(
        "Qwen2MoeTopKRouter",
        "Qwen3MoeTopKRouter",
        "OlmoeTopKRouter",
        "FlexOlmoTopKRouter",
        "MellumTopKRouter",
        "Qwen3NextTopKRouter",
        "Qwen3OmniMoeThinkerTextTopKRouter",
        "Qwen3OmniMoeTalkerTextTopKRouter",
        "Qwen4ExpTextTopKRouter",
    ),
    scores=_qwen_scores,
    **_softmax_topk(None, "logits"),
)

# ---- Jamba: softmax, top-k, raw probabilities -------------------------------------------------


def _jamba_scores(router: nn.Module, hidden: torch.Tensor) -> RouterScores:
    logits = F.linear(hidden, router.weight)
    probs = torch.nn.functional.softmax(logits, dim=-1, dtype=torch.float)
    return _softmax_scores(logits, probs)


JAMBA = MoEFamily(
    name="jamba",
    router_classes=("JambaTopKRouter",),
    scores=_jamba_scores,
    **_softmax_topk(False, "hidden", flattens_hidden=False),
    router_attr="router",
    min_transformers="5.21",  # JambaTopKRouter first appears in transformers 5.21
)

# ---- GPT-OSS: top-k over logits (+bias), softmax over the kept ---------------------------------


def _gpt_oss_scores(router: nn.Module, hidden: torch.Tensor) -> RouterScores:
    logits = F.linear(hidden, router.weight, router.bias)  # [T, N]
    return RouterScores(logits, torch.softmax(logits.float(), dim=-1), logits)


GPT_OSS = MoEFamily(
    name="gpt-oss",
    router_classes=("GptOssTopKRouter",),
    scores=_gpt_oss_scores,
    weights=_logit_softmax(cast_to_hidden=False),
    router_attr="router",
)

# ---- GraniteMoE: float32 logits, top-k over logits, softmax over the kept ---------------------


def _granite_scores(router: nn.Module, hidden: torch.Tensor) -> RouterScores:
    logits = F.linear(hidden, router.weight).float()  # [T, N]
    return RouterScores(logits, torch.softmax(logits, dim=-1), logits)


GRANITE = MoEFamily(
    name="granitemoe",
    router_classes=(
        "GraniteMoeTopKRouter",
        "GraniteMoeSWATopKRouter",
        "GraniteMoeHybridTopKRouter",
        "GraniteMoeSharedTopKRouter",
    ),
    scores=_granite_scores,
    weights=_logit_softmax(cast_to_hidden=True),
    router_attr="router",
    min_transformers="5.21",  # before it, these routers return (index, weights, logits)
)

# ---- DeepSeek-V2: float32 softmax, greedy or group-limited greedy, scaled, unsorted -------------


def _deepseek_v2_scores(router: nn.Module, hidden: torch.Tensor) -> RouterScores:
    hidden = hidden.view(-1, router.hidden_dim)
    logits = F.linear(hidden.type(torch.float32), router.weight.type(torch.float32))
    probs = logits.softmax(dim=-1, dtype=torch.float32)
    rank = probs
    if router.topk_method == "group_limited_greedy":
        n, g = router.num_experts, router.num_group
        group_scores = probs.view(-1, g, n // g).max(dim=-1).values  # [T, G]
        group_idx = torch.topk(group_scores, k=router.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        score_mask = group_mask.unsqueeze(-1).expand(-1, g, n // g).reshape(-1, n)
        rank = probs.masked_fill(~score_mask.bool(), 0.0)
    elif router.topk_method != "greedy":
        raise NotImplementedError(f"DeepSeek-V2 topk_method {router.topk_method!r} is not supported")
    return RouterScores(logits, probs, rank)


def _deepseek_v2_weights(router, s: RouterScores, sel: Selection, hidden_dtype):
    return _kept(s.rank.gather(1, sel.candidates), sel) * router.routed_scaling_factor


DEEPSEEK_V2 = MoEFamily(
    name="deepseek-v2",
    router_classes=("DeepseekV2TopkRouter", "DeepseekOcr2TextTopkRouter", "UnlimitedOcrTextTopkRouter"),
    scores=_deepseek_v2_scores,
    weights=_deepseek_v2_weights,
    sorted_topk=False,
)

# ---- DeepSeek-V3, GLM-4-MoE: sigmoid scores + correction bias, group-limited, scaled ----------


def _sigmoid_group_scores(router: nn.Module, hidden: torch.Tensor) -> RouterScores:
    hidden = hidden.view(-1, router.hidden_dim)
    logits = F.linear(hidden.type(torch.float32), router.weight.type(torch.float32))
    scores = logits.sigmoid()  # [T, N]
    choice = scores + router.e_score_correction_bias
    n, g = router.num_experts, router.num_group
    group_scores = choice.view(-1, g, n // g).topk(2, dim=-1)[0].sum(dim=-1)  # [T, G]
    group_idx = torch.topk(group_scores, k=router.topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(-1, g, n // g).reshape(-1, n)
    choice = choice.masked_fill(~score_mask.bool(), float("-inf"))
    # entropy distribution: the sigmoid scores normalised to sum 1 (before bias and group limits)
    probs = scores / scores.sum(dim=-1, keepdim=True)
    return RouterScores(logits, probs, choice)


def _sigmoid_weights(router, s: RouterScores, sel: Selection, hidden_dtype):
    scores = s.logits.sigmoid()
    w = _kept(scores.gather(1, sel.candidates), sel)  # [T, K]
    if router.norm_topk_prob:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    return w * router.routed_scaling_factor


DEEPSEEK_V3 = MoEFamily(
    name="deepseek-v3",
    router_classes=(
        "DeepseekV3TopkRouter",
        "Glm4MoeTopkRouter",
        "AXK1TopkRouter",
        "BailingHybridTopkRouter",
        "DeepseekV32TopkRouter",
        "Dots1TopkRouter",
        "Dots3NoteTextTopkRouter",
        "Glm4MoeLiteTopkRouter",
        "Glm4vMoeTextTopkRouter",
        "Glm5NextTextTopkRouter",
        "GlmMoeDsaTopkRouter",
        "HYV4TopkRouter",
        "KimiLinearTopkRouter",
        "MiMoV2FlashTopkRouter",
        "NemotronHTopkRouter",
        "SolarOpenTopkRouter",
    ),
    scores=_sigmoid_group_scores,
    weights=_sigmoid_weights,
    sorted_topk=False,
    # entropy distribution: the sigmoid scores normalised to sum 1 (before bias and group limits)
)

# ---- ERNIE-4.5-MoE: float32 softmax, ranked with the statics bias, renormalised (clamped) ------


def _ernie_scores(router: nn.Module, hidden: torch.Tensor) -> RouterScores:
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        logits = F.linear(hidden.float(), router.weight.float())
        probs = F.softmax(logits, dim=1, dtype=torch.float)
        rank = router.moe_statics(probs)
    return RouterScores(logits, probs, rank)


def _ernie_weights(router, s: RouterScores, sel: Selection, hidden_dtype):
    w = _kept(torch.gather(s.probs, dim=-1, index=sel.candidates), sel)
    w = w / torch.clamp(w.sum(dim=-1, keepdim=True), min=router.norm_min)
    return w.to(hidden_dtype)


ERNIE = MoEFamily(
    name="ernie4.5-moe",
    router_classes=("Ernie4_5_MoeTopKRouter",),
    scores=_ernie_scores,
    weights=_ernie_weights,
)

# ---- PhiMoE: sparsemixer (inference path), generalised from 2 slots to K ----------------------


def _phimoe_scores(router: nn.Module, hidden: torch.Tensor) -> RouterScores:
    logits = nn.Linear.forward(router, hidden)  # [T, N]
    return RouterScores(logits, torch.softmax(logits.float(), dim=-1), logits)


def _phimoe_candidates(logits: torch.Tensor, k: int) -> torch.Tensor:
    """sparsemixer picks by repeated ``max`` (first index on ties), not by ``topk``. [T, N] -> [T, K]."""
    masked, picks = logits, []
    for _ in range(k):
        sel = masked.max(dim=-1, keepdim=True)[1]  # [T, 1]
        picks.append(sel)
        masked = torch.scatter(masked, -1, sel, float("-inf"))
    return torch.concat(picks, dim=-1)


def _phimoe_weights(router, s: RouterScores, sel: Selection, hidden_dtype):
    """Slot j: softmax over the logits not yet selected and within the jitter band of the best
    remaining one, read at the j-th selected expert (sparsemixer, training=False)."""
    scores, eps, cand = s.logits, router.router_jitter_noise, sel.candidates
    masked = scores
    out = []
    for j in range(cand.shape[-1]):
        pick = cand[:, j : j + 1]  # [T, 1]
        threshold = masked.max(dim=-1, keepdim=True).values
        factor = scores.abs().clamp(min=threshold)
        band = ((threshold - scores) / factor) > (2 * eps)
        gates = torch.softmax(masked.masked_fill(band, float("-inf")), dim=-1)
        out.append(gates.gather(dim=-1, index=pick))
        masked = torch.scatter(masked, -1, pick, float("-inf"))
    return _kept(torch.concat(out, dim=-1), sel)


PHIMOE = MoEFamily(
    name="phimoe",
    router_classes=("PhimoeTopKRouter",),
    scores=_phimoe_scores,
    weights=_phimoe_weights,
    candidates=_phimoe_candidates,
    router_attr="router",
)

FAMILIES: tuple[MoEFamily, ...] = (
    MIXTRAL,
    QWEN,
    JAMBA,
    GPT_OSS,
    GRANITE,
    DEEPSEEK_V2,
    DEEPSEEK_V3,
    ERNIE,
    PHIMOE,
)
