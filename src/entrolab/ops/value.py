"""Returns, generalised advantage estimation and the clipped value loss on response-aligned ``(B, T)`` tensors: the
math of PPO's critic, shared by every value model (the native engine's critic, the toy's value table).

Conventions as in ``masked.py``: ``mask`` is 1 on the tokens the loss trains and 0 elsewhere (padding, tool
observations); a masked position inside a response is skipped by the recursions, not treated as an episode end.
"""

from __future__ import annotations

from typing import Optional

import torch

from .masked import _as_float_mask, masked_mean, masked_var


def outcome_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) outcome rewards → (B, T) token rewards: R_i on response i's last valid token, 0 elsewhere (as verl
    places a verifier's score). A response without a valid token gets none."""
    m = mask.float()
    T = m.shape[-1]
    pos = torch.arange(T, device=m.device).expand_as(m)
    last = torch.where(m > 0, pos, torch.full_like(pos, -1)).max(-1).values  # (B,)
    out = torch.zeros_like(m)
    rows = torch.nonzero(last >= 0).flatten()
    out[rows, last[rows]] = rewards.float()[rows]
    return out


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = r_t + γ·G_{t'} over the valid tokens (t' the next valid token), 0 on masked positions: the reward-to-go
    of every trained token. A masked position passes the running return through unchanged."""
    m = _as_float_mask(token_rewards, mask)
    out = torch.zeros_like(token_rewards, dtype=torch.float32)
    running = torch.zeros(token_rewards.shape[0], dtype=torch.float32, device=token_rewards.device)
    for t in reversed(range(token_rewards.shape[-1])):
        new = token_rewards[:, t].float() + gamma * running
        running = torch.where(m[:, t] > 0, new, running)
        out[:, t] = new * m[:, t]
    return out


def gae(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 1506.02438) over the valid tokens, right to left:

        δ_t = r_t + γ·V_{t'} − V_t,   Â_t = δ_t + γ·λ·Â_{t'},   returns G_t = Â_t + V_t

    with t' the next valid token (V and Â after the last valid token are 0). Returns ``(advantages, returns)``,
    unwhitened, 0 on masked positions."""
    m = _as_float_mask(values, mask)
    B, T = values.shape
    next_value = torch.zeros(B, dtype=torch.float32, device=values.device)
    next_adv = torch.zeros(B, dtype=torch.float32, device=values.device)
    adv = torch.zeros(B, T, dtype=torch.float32, device=values.device)
    for t in reversed(range(T)):
        v = values[:, t].float()
        delta = token_rewards[:, t].float() + gamma * next_value - v
        a = delta + gamma * lam * next_adv
        valid = m[:, t] > 0
        next_value = torch.where(valid, v, next_value)
        next_adv = torch.where(valid, a, next_adv)
        adv[:, t] = torch.where(valid, a, torch.zeros_like(a))
    returns = (adv + values.float()) * m
    return adv, returns


def clipped_value_loss(vpreds: torch.Tensor, values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: Optional[float] = 0.5, num_tokens: Optional[float] = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss (1707.06347; the form of verl ``compute_value_loss``):

        L = ½ · token-mean( max((V − G)², (clip(V, V_old − c, V_old + c) − G)²) )

    over the valid tokens (divided by ``num_tokens`` when given, the mini-batch's count under gradient
    accumulation). ``clip`` None = the plain ½(V − G)². Returns ``(loss, clipfrac)``, the fraction of valid tokens
    where the clipped term is the larger one."""
    m = _as_float_mask(vpreds, mask)
    err = (vpreds - returns) ** 2
    if clip is None:
        loss_mat, frac = err, torch.zeros((), device=vpreds.device)
    else:
        clipped = values + torch.clamp(vpreds - values, -clip, clip)
        err_clipped = (clipped - returns) ** 2
        loss_mat = torch.maximum(err, err_clipped)
        frac = masked_mean((err_clipped > err).float(), m)
    total = torch.where(m > 0, loss_mat, torch.zeros_like(loss_mat)).sum()
    den = m.sum() if num_tokens is None else torch.as_tensor(float(num_tokens))
    return 0.5 * total / den.clamp(min=1.0), frac


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(G − V)/Var(G) over the valid tokens (1 = the values predict the returns exactly, 0 = no better than
    their mean, < 0 = worse); NaN when the returns have no variance (below 1e-10: constant up to float error)."""
    var_g = float(masked_var(returns.float(), mask))
    if not var_g > 1e-10:
        return float("nan")
    return 1.0 - float(masked_var((returns - values).float(), mask)) / var_g
