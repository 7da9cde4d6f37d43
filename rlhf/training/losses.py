"""Pure loss functions for reward modelling and PPO.

Every function here is a pure function of tensors (no model, no optimizer) and is unit-tested
against a plain Python loop or a hand-computed value in tests/rlhf/training/test_losses.py.
Shapes: B = batch (responses), T = response tokens. `mask` is 1.0 on real response tokens and
0.0 on padding after the end of a response.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    rewards_chosen: torch.Tensor,
    rewards_rejected: torch.Tensor,
    *,
    margin: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    is_tie: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted Bradley-Terry loss -log sigmoid(r_chosen - r_rejected - margin), averaged by weight.

    Tie pairs (is_tie True) use the symmetric loss -(log s(d) + log s(-d)) / 2, which is minimal
    at d = 0. Give them weight 0 to leave them out. Returns a scalar.
    """
    diff = rewards_chosen - rewards_rejected  # (B,)
    if margin is not None:
        diff = diff - margin
    per_pair = -F.logsigmoid(diff)  # (B,)
    if is_tie is not None:
        raw = rewards_chosen - rewards_rejected
        tie_loss = -0.5 * (F.logsigmoid(raw) + F.logsigmoid(-raw))
        per_pair = torch.where(is_tie.bool(), tie_loss, per_pair)
    if weight is None:
        return per_pair.mean()
    total = weight.sum()
    if total <= 0:
        # Nothing to learn from this batch (e.g. ties only); keep the graph alive.
        return (per_pair * 0.0).sum()
    return (per_pair * weight).sum() / total


def group_weights(group_ids: list[str], pair_weights: list[float] | None = None) -> list[float]:
    """Per-pair weights such that every group (one ranking) has total weight 1 (InstructGPT 3.5).

    With `pair_weights` (e.g. labeler reliability, 0 for excluded ties) each pair's share within
    its group is proportional to its own weight; a group whose weights are all 0 gets 0.
    """
    if pair_weights is None:
        pair_weights = [1.0] * len(group_ids)
    totals: dict[str, float] = {}
    for gid, w in zip(group_ids, pair_weights, strict=True):
        totals[gid] = totals.get(gid, 0.0) + w
    return [(w / totals[gid]) if totals[gid] > 0 else 0.0 for gid, w in zip(group_ids, pair_weights, strict=True)]


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where mask is 1."""
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `values` where mask is 1 (Bessel-corrected by default)."""
    mean = masked_mean(values, mask)
    centered = values - mean
    variance = masked_mean(centered**2, mask)
    if unbiased:
        n = mask.sum()
        if n > 1:
            variance = variance * n / (n - 1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise to zero mean and unit variance over the masked entries; padding stays 0."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens (Schulman et al. 2016).

    rewards, values, mask: (B, T). The value after the last real token is 0 (episode ends).
    Returns (advantages, returns), both (B, T), zero on padding.
    """
    values = values * mask
    rewards = rewards * mask
    _, T = rewards.shape
    lastgaelam = torch.zeros_like(rewards[:, 0])  # (B,)
    advantages_reversed = []
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t < T - 1 else torch.zeros_like(values[:, 0])
        # A padded next step means the episode ended at t: no bootstrap, no carried advantage.
        nextmask = mask[:, t + 1] if t < T - 1 else torch.zeros_like(mask[:, 0])
        delta = rewards[:, t] + gamma * nextvalues * nextmask - values[:, t]
        lastgaelam = delta + gamma * lam * nextmask * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1) * mask  # (B, T)
    returns = (advantages + values) * mask  # (B, T)
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate loss. Returns (pg_loss, stats with approx_kl and clipfrac)."""
    logratio = logprobs - old_logprobs  # (B, T)
    ratio = torch.exp(logratio)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    with torch.no_grad():
        # k3 estimator of KL(old || new), as in CleanRL.
        approx_kl = masked_mean((ratio - 1) - logratio, mask)
        clipfrac = masked_mean((pg_losses2 > pg_losses).float(), mask)
    return pg_loss, {"approx_kl": approx_kl, "clipfrac": clipfrac, "ratio": masked_mean(ratio, mask)}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    cliprange_value: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss 0.5 * max((v - R)^2, (v_clipped - R)^2). Returns (vf_loss, stats)."""
    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf_losses1 = (values - returns) ** 2  # (B, T)
    vf_losses2 = (values_clipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    with torch.no_grad():
        vf_clipfrac = masked_mean((vf_losses2 > vf_losses1).float(), mask)
    return vf_loss, {"vf_clipfrac": vf_clipfrac}


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from samples of the policy (Schulman's k1-k3).

    k1: log p - log q (unbiased, can be negative); k2: 0.5 (log p - log q)^2;
    k3: (q/p - 1) - log(q/p) (unbiased, always >= 0); abs: |log p - log q|.
    """
    logr = logprobs - ref_logprobs  # (B, T) log(p/q)
    if kind == "k1":
        return logr
    if kind == "k2":
        return 0.5 * logr**2
    if kind == "k3":
        return torch.expm1(-logr) + logr
    if kind == "abs":
        return logr.abs()
    raise ValueError(f"kl_estimator: unknown estimator {kind!r} (expected k1, k2, k3 or abs)")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position, in float32: (B, T, V) -> (B, T).

    One row at a time, so that the (B, T, V) softmax is never materialised in float32 at once.
    """
    rows = []
    for row in logits:  # (T, V)
        row = row.float()
        pd = torch.softmax(row, dim=-1)
        rows.append(torch.logsumexp(row, dim=-1) - (pd * row).sum(dim=-1))
    return torch.stack(rows)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of `labels` under `logits`, in float32: (B, T, V), (B, T) -> (B, T).

    A selective log-softmax: the label's logit minus the row's logsumexp, one row at a time
    (no full (B, T, V) log-softmax copy; half-precision logits are upcast per row).
    """
    rows = []
    for row, row_labels in zip(logits, labels, strict=True):  # (T, V), (T,)
        row = row.float()
        picked = row.gather(1, row_labels.unsqueeze(1)).squeeze(1)
        rows.append(picked - torch.logsumexp(row, dim=-1))
    return torch.stack(rows)


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019): steer the observed KL towards `target`."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        """Multiply the coefficient by 1 + clip(kl/target - 1, -0.2, 0.2) * n_steps / horizon."""
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value


class FixedKLController:
    """Constant KL coefficient."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> float:
        """Keep the coefficient unchanged."""
        return self.value
