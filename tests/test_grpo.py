"""Advantages and every loss variant against float64 numpy written here, plus hand-computed values."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from r1zero import grpo

# ---------------------------------------------------------------------------------------------------
# Advantages.


def np_advantages(R, valid, estimator, eps, ddof):
    R, valid = np.asarray(R, np.float64), np.asarray(valid, bool)
    out = np.zeros_like(R)
    for p in range(R.shape[0]):
        r = R[p][valid[p]]
        if len(r) < 2:
            continue
        c = r - r.mean()
        if estimator == "grpo":
            a = c / (r.std(ddof=ddof) + eps)
        elif estimator == "mean_only":
            a = c
        elif estimator == "rloo":
            a = np.asarray([r[i] - np.delete(r, i).mean() for i in range(len(r))])
        else:
            a = c  # scaled below
        out[p][valid[p]] = a
    if estimator == "batch_std":  # std over every valid row of its group-centred reward
        allc = np.concatenate([R[p][valid[p]] - R[p][valid[p]].mean() for p in range(R.shape[0]) if valid[p].any()])
        out = out / (allc.std(ddof=ddof) + eps)
    return out


@pytest.mark.parametrize("estimator, ddof", list(itertools.product(grpo.ADVANTAGES, (0, 1))))
def test_advantages_match_numpy(estimator, ddof):
    rng = np.random.default_rng(0)
    R = rng.normal(size=(6, 5))
    R[1] = 0.7  # an all-equal group: zero advantage
    valid = rng.random((6, 5)) > 0.2
    valid[2] = [True, False, False, False, False]  # one valid member: zero advantage
    got = np.asarray(grpo.advantages(jnp.asarray(R), jnp.asarray(valid), estimator, 1e-4, ddof))
    want = np_advantages(R, valid, estimator, 1e-4, ddof)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.all(got[~valid] == 0) and np.all(got[1] == 0) and np.all(got[2] == 0)


def test_advantage_golden_values():
    R, valid = jnp.asarray([[1.0, 0.0, 0.0, 1.0]]), jnp.ones((1, 4), bool)
    # mean 0.5; population std 0.5, unbiased std sqrt(1/3).
    np.testing.assert_allclose(grpo.advantages(R, valid, "grpo", 0.0, 0), [[1, -1, -1, 1]], atol=1e-6)
    np.testing.assert_allclose(grpo.advantages(R, valid, "grpo", 0.0, 1),
                               [[0.8660254, -0.8660254, -0.8660254, 0.8660254]], atol=1e-6)
    np.testing.assert_allclose(grpo.advantages(R, valid, "mean_only"), [[0.5, -0.5, -0.5, 0.5]], atol=1e-6)
    # RLOO: 1 - (0+0+1)/3 = 2/3 ; 0 - (1+0+1)/3 = -2/3
    np.testing.assert_allclose(grpo.advantages(R, valid, "rloo"), [[2 / 3, -2 / 3, -2 / 3, 2 / 3]], atol=1e-6)
    # A could-not-score member is outside the baseline: group {1, 0, 1} has mean 2/3.
    part = jnp.asarray([[True, True, False, True]])
    np.testing.assert_allclose(grpo.advantages(R, part, "mean_only"), [[1 / 3, -2 / 3, 0, 1 / 3]], atol=1e-6)


@pytest.mark.parametrize("estimator", grpo.ADVANTAGES)
def test_equal_rewards_that_are_not_exact_in_binary_get_exactly_zero_advantage(estimator):
    """1.2 and 0.2 (the main job's 1.0 + 0.2 format bonus) have no exact float32 mean: the group's
    advantage must still be exactly 0, or Adam turns the rounding into a full-size step."""
    R = np.asarray([[1.2] * 8, [0.2] * 8, [1.2, 0.2, 1.2, 1.0, 0.0, 0.2, 1.2, 1.2], [0.1] * 7 + [0.3]])
    valid = np.ones_like(R, bool)
    valid[1, 3] = False  # a could-not-score member does not make the group informative
    got = np.asarray(grpo.advantages(jnp.asarray(R), jnp.asarray(valid), estimator, 1e-4, 1))
    assert np.all(got[:2] == 0.0)
    no_eps = np.asarray(grpo.advantages(jnp.asarray(R), jnp.asarray(valid), estimator, 0.0, 1))
    assert np.all(no_eps[:2] == 0.0) and np.all(np.isfinite(no_eps))  # std_eps=0: 0/0 never reaches the loss
    assert np.all(got[2:] != 0.0)
    if estimator != "batch_std":  # unchanged for the informative groups
        np.testing.assert_allclose(got[2:], np_advantages(R[2:], valid[2:], estimator, 1e-4, 1), rtol=1e-5, atol=1e-6)


def test_unknown_estimator_is_named():
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        grpo.advantages(jnp.zeros((1, 2)), jnp.ones((1, 2), bool), "ppo")


# ---------------------------------------------------------------------------------------------------
# The objective.


def np_loss(logp, old, adv, mask, eps_low, eps_high, aggregation, sequence_ratio, max_len, beta, ref, kl):
    logp, old, adv, ref = (np.asarray(x, np.float64) for x in (logp, old, adv, ref))
    mask = np.asarray(mask, bool)
    B, T = logp.shape
    per_token = np.zeros((B, T))
    for i in range(B):
        n = mask[i].sum()
        seq_log_ratio = (logp[i] - old[i])[mask[i]].mean() if n else 0.0
        for t in range(T):
            if not mask[i, t]:
                continue
            r = np.exp(seq_log_ratio if sequence_ratio else logp[i, t] - old[i, t])
            obj = min(r * adv[i], np.clip(r, 1 - eps_low, 1 + eps_high) * adv[i])
            if beta:
                log_p = ref[i, t] - logp[i, t]
                k = {"k1": -log_p, "k2": 0.5 * log_p**2, "k3": np.exp(log_p) - log_p - 1}[kl]
                obj -= beta * k
            per_token[i, t] = -obj
    lens = mask.sum(1)
    if aggregation == "seq-mean-token-mean":
        num = sum(per_token[i].sum() / lens[i] for i in range(B) if lens[i])
        den = (lens > 0).sum()
    elif aggregation == "token-mean":
        num, den = per_token.sum(), mask.sum()
    else:
        num, den = per_token.sum(), (lens > 0).sum() * max_len
    return num, den


def random_batch(seed, B=5, T=7):
    rng = np.random.default_rng(seed)
    old = -rng.uniform(0.1, 3.0, (B, T))
    logp = old + rng.normal(0, 0.4, (B, T))  # ratios well outside [0.8, 1.2] for some tokens
    ref = old + rng.normal(0, 0.3, (B, T))
    adv = rng.normal(size=B)
    mask = rng.random((B, T)) > 0.3
    mask[3] = False  # a row with no tokens
    return logp, old, adv, mask, ref


@pytest.mark.parametrize(
    "aggregation, sequence_ratio, beta, kl",
    [(a, s, 0.0, "k3") for a in grpo.AGGREGATIONS for s in (False, True)]
    + [("seq-mean-token-mean", False, 0.05, k) for k in grpo.KL_ESTIMATORS]
    + [("token-mean", True, 0.1, "k3")],
)
def test_policy_loss_matches_numpy(aggregation, sequence_ratio, beta, kl):
    logp, old, adv, mask, ref = random_batch(1)
    eps_low, eps_high = (3e-4, 4e-4) if sequence_ratio else (0.2, 0.28)
    num, den, stats = grpo.policy_loss(
        jnp.asarray(logp, jnp.float32), jnp.asarray(old, jnp.float32), jnp.asarray(adv, jnp.float32),
        jnp.asarray(mask), epsilon_low=eps_low, epsilon_high=eps_high, aggregation=aggregation,
        sequence_ratio=sequence_ratio, max_len=7, beta=beta, ref_logp_BxT=jnp.asarray(ref, jnp.float32),
        kl_estimator=kl)
    want_num, want_den = np_loss(logp, old, adv, mask, eps_low, eps_high, aggregation, sequence_ratio, 7,
                                 beta, ref, kl)
    np.testing.assert_allclose(float(num), want_num, rtol=1e-5, atol=1e-6)
    assert float(den) == want_den


def test_policy_loss_golden_values():
    # One completion of two tokens, advantage +1. Token 1: ratio 1.5 -> clipped to 1.2; token 2: ratio 1.
    old = jnp.log(jnp.asarray([[0.2, 0.5]]))
    logp = jnp.log(jnp.asarray([[0.3, 0.5]]))
    num, den, stats = grpo.policy_loss(logp, old, jnp.asarray([1.0]), jnp.ones((1, 2), bool))
    assert float(num) == pytest.approx(-(1.2 + 1.0) / 2, abs=1e-6) and float(den) == 1
    assert float(stats["clip_high_frac"]) == pytest.approx(0.5)
    # Advantage -1: min(-1.5, -1.2) = -1.5 on token 1 (no clipping in the pessimistic direction).
    num, _, stats = grpo.policy_loss(logp, old, jnp.asarray([-1.0]), jnp.ones((1, 2), bool))
    assert float(num) == pytest.approx((1.5 + 1.0) / 2, abs=1e-6)
    assert float(stats["clip_low_frac"]) == 0.0
    # Dr. GRPO's constant normaliser: the sum over tokens / (1 completion x max_len 4).
    num, den, _ = grpo.policy_loss(logp, old, jnp.asarray([1.0]), jnp.ones((1, 2), bool),
                                   aggregation="constant", max_len=4)
    assert float(num) == pytest.approx(-2.2, abs=1e-6) and float(den) == 4
    # k3 KL of identical policies is 0; of p_ref/p_theta = e it is e - 2.
    kl = grpo.kl_divergence(jnp.asarray([0.0, 0.0]), jnp.asarray([0.0, 1.0]), "k3")
    np.testing.assert_allclose(kl, [0.0, np.e - 2], atol=1e-6)


def test_kl_is_masked_before_the_exponential():
    """A prompt token the reference finds far likelier than the policy (ref - logp = 200 nats: exp
    overflows float32) sits outside the mask: the loss and its gradient stay finite and equal the
    loss without that position."""
    import jax

    logp = jnp.asarray([[-250.0, -1.0, -2.0], [-3.0, -0.5, -0.7]])
    ref = jnp.asarray([[-50.0, -1.2, -1.5], [-2.0, -0.4, -0.9]])
    mask = jnp.asarray([[False, True, True], [False, True, True]])
    old, adv = logp, jnp.asarray([1.0, -1.0])
    loss = lambda lp, r: grpo.policy_loss(lp, old, adv, mask, beta=0.04, ref_logp_BxT=r, aggregation="token-mean")
    num, den, stats = loss(logp, ref)
    assert np.isfinite(float(num)) and np.isfinite(float(stats["kl"]))
    calm = ref.at[0, 0].set(-250.0)  # the same but harmless masked value
    np.testing.assert_allclose(float(num), float(loss(logp, calm)[0]), rtol=1e-6)
    grad = jax.grad(lambda lp: loss(lp, ref)[0])(logp)
    assert np.all(np.isfinite(np.asarray(grad))) and float(grad[0, 0]) == 0.0


def test_on_policy_loss_is_zero_but_gradient_is_not():
    """The reference's caveat: ratio 1 everywhere and centred advantages give loss ~0, gradient != 0."""
    import jax

    old = jnp.log(jnp.asarray([[0.2, 0.5], [0.4, 0.1]]))
    adv = jnp.asarray([1.0, -1.0])
    loss = lambda lp: grpo.policy_loss(lp, old, adv, jnp.ones((2, 2), bool))[0]
    assert abs(float(loss(old))) < 1e-7
    assert float(jnp.abs(jax.grad(loss)(old)).sum()) > 0.5


def test_overlong_penalty_and_zero_std_groups():
    np.testing.assert_allclose(grpo.overlong_penalty(jnp.asarray([10, 12, 14, 16, 20]), 16, 4),
                               [0.0, 0.0, -0.5, -1.0, -1.0])
    R = jnp.asarray([[1.0, 1.0], [0.0, 1.0], [0.5, 0.0]])
    valid = jnp.asarray([[True, True], [True, True], [True, False]])
    np.testing.assert_array_equal(grpo.zero_std_groups(R, valid), [True, False, True])
