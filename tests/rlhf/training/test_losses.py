"""Every loss against a plain Python loop or a hand-computed value."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.training import losses


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_bradley_terry_hand_computed():
    rc, rr = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    loss = losses.bradley_terry_loss(rc, rr)
    expected = (-math.log(_sig(1.0)) - math.log(_sig(-2.0))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(1.2201, abs=1e-4)


def test_bradley_terry_margin_weight_and_tie():
    rc, rr = torch.tensor([2.0, 1.0, 0.5]), torch.tensor([0.5, 1.5, 0.5])
    margin = torch.tensor([1.0, 0.0, 0.0])
    weight = torch.tensor([0.5, 0.25, 0.25])
    is_tie = torch.tensor([False, False, True])
    loss = losses.bradley_terry_loss(rc, rr, margin=margin, weight=weight, is_tie=is_tie)
    terms = [
        -math.log(_sig(2.0 - 0.5 - 1.0)),
        -math.log(_sig(1.0 - 1.5)),
        -0.5 * (math.log(_sig(0.0)) + math.log(_sig(0.0))),  # tie: log 2
    ]
    expected = sum(w * t for w, t in zip([0.5, 0.25, 0.25], terms, strict=True)) / 1.0
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # Weight zero leaves a pair out entirely.
    zero = losses.bradley_terry_loss(rc, rr, weight=torch.tensor([1.0, 0.0, 0.0]))
    assert zero.item() == pytest.approx(-math.log(_sig(1.5)), abs=1e-6)


def test_group_weights_give_each_ranking_total_one():
    ids = ["a"] * 6 + ["b"] * 1 + ["c"] * 3
    w = losses.group_weights(ids)
    assert w[:6] == [pytest.approx(1 / 6)] * 6
    assert w[6] == 1.0
    assert sum(w) == pytest.approx(3.0)
    weighted = losses.group_weights(["a", "a", "b"], [1.0, 3.0, 0.0])
    assert weighted == [0.25, 0.75, 0.0]


def _gae_loop(rewards, values, lengths, gamma, lam):
    out_adv, out_ret = [], []
    for r, v, n in zip(rewards, values, lengths, strict=True):
        adv = [0.0] * len(r)
        last = 0.0
        for t in reversed(range(n)):
            next_v = v[t + 1] if t + 1 < n else 0.0
            delta = r[t] + gamma * next_v - v[t]
            last = delta + gamma * lam * last
            adv[t] = last
        out_adv.append(adv)
        out_ret.append([adv[t] + v[t] if t < n else 0.0 for t in range(len(r))])
    return out_adv, out_ret


def test_gae_matches_plain_loop():
    torch.manual_seed(0)
    B, T = 3, 5
    rewards, values = torch.randn(B, T), torch.randn(B, T)
    lengths = [5, 3, 1]
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths])
    adv, ret = losses.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    exp_adv, exp_ret = _gae_loop(rewards.tolist(), values.tolist(), lengths, 0.9, 0.8)
    assert torch.allclose(adv, torch.tensor(exp_adv), atol=1e-6)
    assert torch.allclose(ret, torch.tensor(exp_ret), atol=1e-6)


def test_gae_hand_computed():
    # gamma = lam = 1: advantage = sum of future rewards - value.
    adv, ret = losses.gae(
        torch.tensor([[0.0, 0.0, 1.0]]),
        torch.tensor([[0.5, 0.25, 0.0]]),
        torch.ones(1, 3),
        gamma=1.0,
        lam=1.0,
    )
    assert adv.tolist() == [[0.5, 0.75, 1.0]]
    assert ret.tolist() == [[1.0, 1.0, 1.0]]


def test_masked_whiten_matches_loop():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    xs = [1.0, 2.0, 3.0, 4.0]
    mean = sum(xs) / 4
    var = sum((x - mean) ** 2 for x in xs) / 3
    out = losses.masked_whiten(values, mask)
    expected = [
        [(x - mean) / math.sqrt(var + 1e-8) for x in [1.0, 2.0, 3.0]],
        [(4.0 - mean) / math.sqrt(var + 1e-8), 0.0, 0.0],
    ]
    assert torch.allclose(out, torch.tensor(expected), atol=1e-6)


def test_policy_loss_matches_loop():
    logp = torch.tensor([[-1.0, -0.5], [-2.0, -0.1]])
    old = torch.tensor([[-1.2, -0.4], [-1.0, -0.1]])
    adv = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, stats = losses.policy_loss(logp, old, adv, mask, cliprange=0.2)
    terms, clipped, kls = [], [], []
    for i in range(2):
        for t in range(2):
            if not mask[i, t]:
                continue
            ratio = math.exp(logp[i, t] - old[i, t])
            a = adv[i, t].item()
            l1, l2 = -a * ratio, -a * min(max(ratio, 0.8), 1.2)
            terms.append(max(l1, l2))
            clipped.append(1.0 if l2 > l1 else 0.0)
            kls.append((ratio - 1) - math.log(ratio))
    assert loss.item() == pytest.approx(sum(terms) / 3, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(sum(clipped) / 3, abs=1e-6)
    assert stats["approx_kl"].item() == pytest.approx(sum(kls) / 3, abs=1e-6)
    assert sum(clipped) == 1.0  # (1, 0): ratio e^-1 < 0.8 with a positive advantage


def test_value_loss_matches_loop():
    v = torch.tensor([[1.0, 0.0, 3.0]])
    old = torch.tensor([[0.5, 0.1, 0.0]])
    ret = torch.tensor([[2.0, 0.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, stats = losses.value_loss(v, old, ret, mask, cliprange_value=0.2)
    terms = []
    for t in range(2):
        vc = old[0, t] + max(min(v[0, t] - old[0, t], 0.2), -0.2)
        terms.append(max((v[0, t] - ret[0, t]) ** 2, (vc - ret[0, t]) ** 2).item())
    assert loss.item() == pytest.approx(0.5 * sum(terms) / 2, abs=1e-6)
    # t=0: clipped 0.7 is further from 2.0 than 1.0 -> 1.69; t=1: 0.
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.0) / 2, abs=1e-6)
    assert stats["vf_clipfrac"].item() == pytest.approx(0.5)


def test_kl_estimators_hand_computed():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    lr = math.log(2.0)
    assert losses.kl_penalty(logp, ref, "k1").item() == pytest.approx(lr)
    assert losses.kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * lr**2)
    assert losses.kl_penalty(logp, ref, "k3").item() == pytest.approx((0.5 - 1) + lr)
    assert losses.kl_penalty(ref, logp, "abs").item() == pytest.approx(lr)
    with pytest.raises(ValueError, match=r"^kl_estimator: "):
        losses.kl_penalty(logp, ref, "k9")


def test_kl_estimators_are_unbiased_for_true_kl():
    torch.manual_seed(0)
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.4, 0.4, 0.2])
    true_kl = (p * (p / q).log()).sum().item()
    x = torch.multinomial(p, 200_000, replacement=True)
    for kind in ("k1", "k3"):
        est = losses.kl_penalty(p.log()[x], q.log()[x], kind).mean().item()
        assert est == pytest.approx(true_kl, abs=0.01)


def test_entropy_and_logprobs():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    assert losses.entropy_from_logits(logits).item() == pytest.approx(1.5 * math.log(2))
    lp = losses.logprobs_from_logits(logits, torch.tensor([[1]]))
    assert lp.item() == pytest.approx(math.log(0.25))


def test_adaptive_kl_controller():
    ctl = losses.AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert ctl.update(12.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))  # clipped at +0.2
    ctl = losses.AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert ctl.update(5.4, 50) == pytest.approx(0.1 * (1 - 0.1 * 0.5))
    assert losses.FixedKLController(0.3).update(100.0, 10) == 0.3
