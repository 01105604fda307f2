"""Advantage estimators that read what a sampling strategy recorded (issue 9): tree-structured advantages over the
nodes of branching rollouts (TreeRL), value-modulated restarts (FR3E), entropy-based reshaping (ETTRL), one-sided
REINFORCE rows (AEPO-Wang) and mixed-policy rollouts (MENTOR). They register in the advantage knob's registry.

The tree extras (``generation/branching.py``): ``tree_node`` (B, T) — the segment node of each response token (0 on
padding). A row's path is its sequence of distinct node ids; the leaves of node n's subtree are the rows whose path
contains n; n's parent is the node before it on any such path (the prompt, "root", for the first node).


Also ARPO's advantage attribution and AEPO-Dong's entropy-aware advantage (the agentic rollouts of
``knobs/sampling/agentic.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ...batch import BatchError, RolloutBatch
from ...errors import ConfigError
from ...ops.masked import masked_mean
from ...registry import check_range
from .base import (
    ADVANTAGES,
    AdvantageEstimator,
    GRPOAdvantage,
    broadcast_to_tokens,
    group_statistics,
)


def _extra(batch: RolloutBatch, name: str, who: str, source: str) -> torch.Tensor:
    if name not in batch.extras:
        raise BatchError(f"{who} advantages need batch.extras[{name!r}], which the {source} sampling strategy "
                         "records; use the method's own sampling (see `entrolab methods`)")
    return batch.extras[name]


def row_paths(tree_node: torch.Tensor) -> list[list[int]]:
    """Each row's path: its distinct node ids in order of first appearance (0 = padding, skipped)."""
    out = []
    for row in tree_node.tolist():
        path: list[int] = []
        for v in row:
            if v and (not path or path[-1] != v):
                if v in path:
                    raise BatchError("tree_node: a node appears twice on one path (not a tree)")
                path.append(v)
        out.append(path)
    return out


# ----------------------------------------------------------------------------------------------------------- TreeRL
@ADVANTAGES.register("treerl")
@dataclass
class TreeRLAdvantage(AdvantageEstimator):
    """TreeRL process advantages over EPTree nodes (Hou et al., arXiv 2506.11902).

    Leaf scores are leave-one-out normalised within the prompt's group: r̂_i = R_i − mean_{j≠i} R_j. Node value
    V(n) = mean of r̂ over the leaves L(n) of n's subtree; V(root) = mean over all leaves of the prompt (= 0);

        GA(n) = V(n) − V(root),   LA(n) = V(n) − V(parent(n)),   R(n) = (GA(n) + LA(n)) / √|L(n)|,

    given to every token of segment n (``mode="ga+la"``, the paper). ``mode="la"``: R(n) = LA(n)/√|L(n)|, the
    reference code's default (``weighted_value_style=sqrt``). A group of one leaf gets 0.
    """

    mode: str = "ga+la"
    """'ga+la' (R(n) = (GA + LA)/√|L(n)|, the paper) or 'la' (LA/√|L(n)|, the reference code's default)."""

    def __post_init__(self) -> None:
        if self.mode not in ("ga+la", "la"):
            raise ConfigError(f"treerl.mode = {self.mode!r}; choose 'ga+la' (paper) or 'la' (reference code)")

    def node_rewards(self, rewards: torch.Tensor, group_ids: torch.Tensor, paths: list[list[int]]
                     ) -> dict[tuple[int, int], float]:
        """(group, node) → R(n) from leaf rewards, groups and paths."""
        mean, _, count = group_statistics(rewards.float(), group_ids)
        loo = torch.where(count > 1, (rewards.float() - mean) * count / (count - 1).clamp(min=1.0),
                          torch.zeros_like(mean))  # R_i − mean_{j≠i} R_j
        leaves: dict[tuple[int, int], list[int]] = {}
        parent: dict[tuple[int, int], Optional[int]] = {}
        for i, (g, path) in enumerate(zip(group_ids.tolist(), paths)):
            for k, node in enumerate(path):
                leaves.setdefault((g, node), []).append(i)
                parent[(g, node)] = path[k - 1] if k else None
        root = {g: float(loo[group_ids == g].mean()) for g in set(group_ids.tolist())}
        value = {key: float(loo[idx].mean()) for key, idx in leaves.items()}
        out = {}
        for (g, node), idx in leaves.items():
            v = value[(g, node)]
            p = parent[(g, node)]
            la = v - (root[g] if p is None else value[(g, p)])
            ga = v - root[g]
            out[(g, node)] = ((ga + la) if self.mode == "ga+la" else la) / math.sqrt(len(idx))
        return out

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        nodes = _extra(batch, "tree_node", "treerl", "eptree")
        r = self.node_rewards(batch.rewards, batch.group_ids, row_paths(nodes))
        adv = torch.zeros_like(batch.mask)
        for i, g in enumerate(batch.group_ids.tolist()):
            for t, node in enumerate(nodes[i].tolist()):
                if node:
                    adv[i, t] = r[(g, node)]
        return adv * batch.mask


# ------------------------------------------------------------------------------------------------------------ FR3E
@ADVANTAGES.register("fr3e")
@dataclass
class FR3EAdvantage(AdvantageEstimator):
    """FR3E value-modulated advantages (Zheng et al., arXiv 2507.07017).

    GRPO within each group (the base trajectories of a prompt; the M rollouts from one state S_j), then the rows of
    state j ≥ 1 are scaled by an adaptive factor of the value change V(S_j) − V(S_{j−1}), V(S_j) the mean reward of
    the rollouts from S_j and V(S_0) that of the prompt's base trajectories:

        α_j = clip(1 − λ·(V(S_j) − V(S_{j−1})), 1 − λ, 1 + λ),   λ = ``modulation`` = 0.5,

    which down-weights states whose value already improved and up-weights those where it fell. The paper gives no
    formula for α_j (reviewers' complaint): this monotone, bounded form is our reading. Needs the ``fr3e`` extras.
    """

    modulation: float = 0.5
    """λ ∈ [0, 1] in α_j = clip(1 − λ·ΔV, 1 − λ, 1 + λ), ΔV the value change in reward units (a reading)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""

    def __post_init__(self) -> None:
        check_range("fr3e", "modulation", self.modulation, lo=0.0, hi=1.0)

    def factors(self, rewards: torch.Tensor, group_ids: torch.Tensor, state: torch.Tensor, base: torch.Tensor
                ) -> torch.Tensor:
        """α per row (1 for base rows and where a needed value is missing from the batch)."""
        r = rewards.float()
        value: dict[tuple[int, int], float] = {}
        for b, j in set(zip(base.tolist(), state.tolist())):
            sel = (base == b) & (state == j)
            if j == 0:
                sel = torch.isin(group_ids, group_ids[sel])  # the base trajectory's whole group
            value[(b, j)] = float(r[sel].mean())
        out = torch.ones_like(r)
        for i, (b, j) in enumerate(zip(base.tolist(), state.tolist())):
            if j >= 1 and (b, j - 1) in value:
                d = value[(b, j)] - value[(b, j - 1)]
                lam = self.modulation
                out[i] = min(1 + lam, max(1 - lam, 1 - lam * d))
        return out

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        state = _extra(batch, "state_index", "fr3e", "fr3e")
        base = _extra(batch, "state_base", "fr3e", "fr3e")
        mean, std, count = group_statistics(batch.rewards, batch.group_ids)
        adv = torch.where(count > 1, (batch.rewards.float() - mean) / (std + self.eps), torch.zeros_like(mean))
        return broadcast_to_tokens(adv * self.factors(batch.rewards, batch.group_ids, state, base), batch.mask)


# ----------------------------------------------------------------------------------------------------------- ETTRL
@ADVANTAGES.register("ettrl_ear")
@dataclass
class ETTRLAdvantage(AdvantageEstimator):
    """EAR, entropy-based advantage reshaping of ETTRL (Liu et al., arXiv 2508.11356), variant Adv-Res:

        H_resp(o_i) = mean token entropy of o_i,   Y_i = 1 + (mean_j H_resp(o_j) − H_resp(o_i)) / mean_j H_resp(o_j),
        Â_{i,t} = Y_i · A_{i,t},   A the GRPO advantage of the group (the prompt's leaves).

    Confident responses are up-weighted, uncertain ones down-weighted. ``clip_beta`` set: the Adv-Clip variant
    A ← clip(A, −β, β) instead (β was not found; no default). Reads ``old_entropy`` (rollout policy, full vocab).
    """

    clip_beta: Optional[float] = None
    """β of the Adv-Clip variant A ← clip(A, −β, β); None = Adv-Res reshaping (β not found; no default)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""

    requires = frozenset({"old_entropy"})

    def __post_init__(self) -> None:
        if self.clip_beta is not None:
            check_range("ettrl_ear", "clip_beta", self.clip_beta, lo=0.0, lo_open=True)

    def reshape_factors(self, h_resp: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        mean_h, _, _ = group_statistics(h_resp, group_ids)
        return torch.where(mean_h > 0, 1 + (mean_h - h_resp) / mean_h.clamp(min=1e-12), torch.ones_like(h_resp))

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        mean, std, count = group_statistics(batch.rewards, batch.group_ids)
        adv = torch.where(count > 1, (batch.rewards.float() - mean) / (std + self.eps), torch.zeros_like(mean))
        if self.clip_beta is not None:
            return broadcast_to_tokens(adv.clamp(-self.clip_beta, self.clip_beta), batch.mask)
        batch.require("old_entropy", who="ettrl_ear")
        h = masked_mean(batch.old_entropy.float(), batch.mask, dim=-1)
        return broadcast_to_tokens(adv * self.reshape_factors(h, batch.group_ids), batch.mask)


# ------------------------------------------------------------------------------------------------------- AEPO-Wang
@ADVANTAGES.register("aepo_wang")
@dataclass
class AEPOWangAdvantage(AdvantageEstimator):
    """AEPO (Wang et al., arXiv 2510.08141): the ``aepo_temperature`` strategy's per-row advantages — the GRPO
    advantage of the main rows (full groups, before the replacement) and 1 for the REINFORCE rows sampled at the
    controlled temperature — broadcast to tokens. ∇J = ∇J_GRPO + α·E_{o∼π^T}[∇log π(o)·R], α realised as the
    share of REINFORCE rows in the batch."""

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        return broadcast_to_tokens(_extra(batch, "seq_advantage", "aepo_wang", "aepo_temperature"), batch.mask)


# ---------------------------------------------------------------------------------------------------------- MENTOR
@ADVANTAGES.register("mentor")
@dataclass
class MentorAdvantage(AdvantageEstimator):
    """MENTOR advantages (Jiang et al., arXiv 2510.04140): on-policy rows get GRPO over the on-policy rows of their
    prompt; mixed-policy rows get only a positive part,

        Â = α_k · [R − mean_on(R)]₊ / R_range,   α_k = α₀ · max(0, 1 − k/K),

    with α₀ = 1, K = 120 steps (α "decays over 120 steps" in ``train.sh``; the linear shape is a reading), k the RL
    step, R_range = max − min of the prompt's rewards (all its rollouts; 0 ⇒ Â = 0 — a reading)."""

    alpha: float = 1.0
    """α₀: initial weight of the mixed-policy rows' positive advantage."""
    decay_steps: int = 120
    """K: RL steps over which α decays linearly to 0 (train.sh's 120; the linear shape is a reading)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""

    def __post_init__(self) -> None:
        check_range("mentor", "alpha", self.alpha, lo=0.0)
        check_range("mentor", "decay_steps", self.decay_steps, lo=1)

    def coefficient(self, step: int) -> float:
        return self.alpha * max(0.0, 1.0 - step / self.decay_steps)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        mixed = _extra(batch, "mixed", "mentor", "mentor") > 0
        r = batch.rewards.float()
        adv = torch.zeros_like(r)
        a = self.coefficient(batch.step)
        for g in set(batch.group_ids.tolist()):
            sel = batch.group_ids == g
            on, mx = sel & ~mixed, sel & mixed
            if int(on.sum()) > 1:
                m, s = r[on].mean(), r[on].std()
                adv[on] = (r[on] - m) / (s + self.eps)
            if int(mx.sum()) and int(on.sum()):
                rng = float(r[sel].max() - r[sel].min())
                if rng > 0:
                    adv[mx] = a * (r[mx] - r[on].mean()).clamp(min=0) / rng
        return broadcast_to_tokens(adv, batch.mask)


# ---------------------------------------------------------------------------------------------------- advantages
def shared_token_mean(values: torch.Tensor, batch: RolloutBatch) -> torch.Tensor:
    """(B, T): at each valid token, the mean of ``values`` (B,) over the rows that share that token's prefix.

    Sharing comes from ``extras["tree_node"]`` (the branching engine's segment ids: rows holding a node share its
    tokens) when present; otherwise two rows of one group share token t when their response ids agree on 0..t
    (identical histories are the same state)."""
    B, T = batch.response_ids.shape
    out = torch.zeros((B, T), dtype=torch.float32)
    v = values.float()
    node = batch.extras.get("tree_node")
    if node is not None:
        node = node.long()
        valid = batch.mask > 0
        ids = node[valid]
        sums: dict[int, float] = {}
        counts: dict[int, set] = {}
        for i in range(B):
            for nd in set(node[i][valid[i]].tolist()):
                sums[nd] = sums.get(nd, 0.0) + float(v[i])
                counts.setdefault(nd, set()).add(i)
        means = torch.tensor([sums[int(n)] / len(counts[int(n)]) for n in ids.tolist()], dtype=torch.float32)
        out[valid] = means
        return out
    ids = batch.response_ids
    for i in range(B):
        same = (batch.group_ids == batch.group_ids[i]).nonzero().flatten().tolist()
        # agree[j, t] = rows i and j have identical ids on 0..t
        agree = torch.cumprod((ids[same] == ids[i]).long(), dim=1).bool()  # (G, T)
        cnt = agree.float().sum(0)
        out[i] = (agree.float() * v[same][:, None]).sum(0) / cnt
    return out * batch.mask


@ADVANTAGES.register("arpo_attribution")
@dataclass
class ARPOAdvantage(AdvantageEstimator):
    """ARPO advantage attribution (2507.19849): GRPO A_i = (R_i − mean_G R)/(std_G R + ε) over all rows of a prompt
    (roots and branches alike). ``mode="soft"`` (default): every row keeps its own A_i on all its tokens, so a prefix
    shared by k branches contributes Σ_i A_i·∇log π(shared) — the average advantage, k times, which is how GRPO
    attributes it implicitly; ``mode="hard"``: each shared token explicitly gets the mean advantage of the rows
    that share it (:func:`shared_token_mean`), own tokens keep A_i. The two differ only where clipping acts."""

    mode: str = "soft"
    """'soft': each row keeps its own A_i; 'hard': shared prefix tokens get the mean A of rows sharing them."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""

    def __post_init__(self) -> None:
        if self.mode not in ("soft", "hard"):
            raise ConfigError(f"arpo_attribution.mode = {self.mode!r}; choose 'soft' (each branch keeps its own "
                              "advantage) or 'hard' (shared tokens get the branches' mean)")
        check_range("arpo_attribution", "eps", self.eps, lo=0.0)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        if self.mode == "soft":
            return GRPOAdvantage(eps=self.eps).compute(batch)
        mean, std, count = group_statistics(batch.rewards, batch.group_ids)
        seq = torch.where(count > 1, (batch.rewards.float() - mean) / (std + self.eps), torch.zeros_like(mean))
        return shared_token_mean(seq, batch)


@ADVANTAGES.register("aepo_entropy_aware")
@dataclass
class AEPOEntropyAdvantage(AdvantageEstimator):
    """AEPO-Dong entropy-aware advantage (2510.14545): Ã_t = A^Acc·(1 + a·Ĥ_t), A^Acc the GRPO advantage,
    Ĥ_t = (H_t − mean H)/std H the token entropy standardised over the valid tokens (std 1 when 0), a = 0.2 (the
    code's constant). Departure: the code standardises the current policy's detached entropy over each micro-batch
    inside the loss; this uses the rollout policy's entropy (``old_entropy``, equal at the first on-policy update)
    over the whole rollout batch, once."""

    requires = frozenset({"old_entropy"})
    coef: float = 0.2
    """a in Ã_t = A·(1 + a·Ĥ_t), Ĥ_t the standardised token entropy (the code's constant 0.2)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""

    def __post_init__(self) -> None:
        check_range("aepo_entropy_aware", "coef", self.coef, lo=0.0)
        check_range("aepo_entropy_aware", "eps", self.eps, lo=0.0)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        batch.require("old_entropy", who="advantage 'aepo_entropy_aware'")
        adv = GRPOAdvantage(eps=self.eps).compute(batch)
        valid = batch.mask > 0
        h = batch.old_entropy.detach().float()
        vals = h[valid]
        if vals.numel() == 0:
            return adv
        std = vals.std() if vals.numel() > 1 else torch.tensor(0.0)
        std = std if float(std) > 0 else torch.tensor(1.0)
        z = (h - vals.mean()) / std
        return adv * (1.0 + self.coef * z) * batch.mask
