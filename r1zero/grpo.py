"""GRPO math as pure functions: group-relative advantages and the clipped policy objective.

Notation: DeepSeekMath's GRPO with the published variants (Dr. GRPO, DAPO, GSPO, RLOO). The loss
is minus the objective and comes back as (numerator, denominator) so micro-batches and shards divide
by the *global* count.

Shape letters: P prompts (groups), G completions per group, B = P * G rows (group-major), T tokens
per row (whatever span the caller passes; the mask says which tokens count: the trainer passes
prompt + completion with the prompt masked out).
"""

from __future__ import annotations

import jax.numpy as jnp

from r1zero.errors import UserError

ADVANTAGES = ("grpo", "mean_only", "rloo", "batch_std")
AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "constant")
KL_ESTIMATORS = ("k1", "k2", "k3")


def advantages(rewards_PxG, valid_PxG, estimator: str = "grpo", eps: float = 1e-4, ddof: int = 1):
    """Per-completion advantages; invalid (could-not-score) rows are outside every statistic and get 0.

    grpo: (R - group mean) / (group std + eps), std with `ddof`; mean_only (Dr. GRPO): R - mean;
    rloo: R - mean of the *other* valid members; batch_std: (R - group mean) / (std over the batch of
    those centred values + eps). A group with fewer than two valid members, or whose valid rewards
    are all equal, has exactly zero advantage (a float32 mean of 1.2s is off by a rounding step, and
    dividing that by std + eps would turn it into a signal of up to 1e-2).
    """
    if estimator not in ADVANTAGES:
        raise UserError(f"unknown advantage estimator {estimator!r}; one of {ADVANTAGES}")
    w = valid_PxG.astype(jnp.float32)
    r = jnp.where(valid_PxG, rewards_PxG, 0.0).astype(jnp.float32)
    n_P = w.sum(-1)
    mean_P = r.sum(-1) / jnp.maximum(n_P, 1)
    informative_P = ~zero_std_groups(rewards_PxG, valid_PxG)
    centred = jnp.where(informative_P[:, None], (r - mean_P[:, None]) * w, 0.0)
    if estimator == "grpo":
        var_P = (centred**2).sum(-1) / jnp.maximum(n_P - ddof, 1)
        adv = centred / (jnp.sqrt(var_P)[:, None] + eps)
    elif estimator == "mean_only":
        adv = centred
    elif estimator == "rloo":
        adv = centred * (n_P / jnp.maximum(n_P - 1, 1))[:, None]  # R_i - (sum - R_i)/(n - 1)
    else:
        total = w.sum()
        var = (centred**2).sum() / jnp.maximum(total - ddof, 1)
        adv = centred / (jnp.sqrt(var) + eps)
    return jnp.where((n_P >= 2)[:, None] & informative_P[:, None] & valid_PxG, adv, 0.0)  # 0/0 stays out


def kl_divergence(logp_BxT, ref_logp_BxT, estimator: str = "k3", mask_BxT=None):
    """Per-token KL(pi_theta || pi_ref) estimate with p = pi_ref / pi_theta (Schulman's k1/k2/k3);
    0 where `mask_BxT` is False (masked before the exponential: a prompt token the reference finds
    far likelier would overflow exp and turn the whole loss into NaN)."""
    log_p = ref_logp_BxT - logp_BxT
    if mask_BxT is not None:
        log_p = jnp.where(mask_BxT, log_p, 0.0)
    if estimator == "k1":
        return -log_p
    if estimator == "k2":
        return 0.5 * log_p**2
    if estimator == "k3":
        return jnp.exp(log_p) - log_p - 1.0
    raise UserError(f"unknown KL estimator {estimator!r}; one of {KL_ESTIMATORS}")


def policy_loss(logp_BxT, old_logp_BxT, adv_B, mask_BxT, *, epsilon_low: float = 0.2,
                epsilon_high: float = 0.2, aggregation: str = "seq-mean-token-mean",
                sequence_ratio: bool = False, max_len: int | None = None, beta: float = 0.0,
                ref_logp_BxT=None, kl_estimator: str = "k3"):
    """(numerator, denominator, stats) of minus the clipped surrogate objective (minus beta * KL).

    sequence_ratio (GSPO): one ratio per completion, exp(mean_t log r_t), clipped once.
    aggregation: seq-mean-token-mean (mean over each completion's tokens, then over completions),
    token-mean (over all tokens), constant (Dr. GRPO: sum over tokens / (completions * max_len)).
    Rows whose mask is all zero count in no denominator.
    """
    mask = mask_BxT.astype(jnp.float32)
    len_B = mask.sum(-1)
    log_ratio = jnp.where(mask_BxT, logp_BxT - old_logp_BxT, 0.0)
    if sequence_ratio:
        log_ratio = jnp.broadcast_to((log_ratio.sum(-1) / jnp.maximum(len_B, 1))[:, None], log_ratio.shape)
    ratio = jnp.exp(log_ratio)
    adv = adv_B[:, None]
    clipped = jnp.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    objective = jnp.minimum(ratio * adv, clipped * adv)
    if beta:
        kl_BxT = kl_divergence(logp_BxT, ref_logp_BxT, kl_estimator, mask_BxT)
        objective = objective - beta * kl_BxT
    per_token = -objective * mask
    has_tokens = (len_B > 0).astype(jnp.float32)
    if aggregation == "seq-mean-token-mean":
        num, den = (per_token.sum(-1) / jnp.maximum(len_B, 1)).sum(), has_tokens.sum()
    elif aggregation == "token-mean":
        num, den = per_token.sum(), mask.sum()
    elif aggregation == "constant":
        if max_len is None:
            raise ValueError("aggregation 'constant' needs max_len")
        num, den = per_token.sum(), has_tokens.sum() * max_len
    else:
        raise UserError(f"unknown aggregation {aggregation!r}; one of {AGGREGATIONS}")
    n_tok = jnp.maximum(mask.sum(), 1)
    stats = {
        "clip_low_frac": ((ratio < 1 - epsilon_low) & (adv < 0) & mask_BxT).sum() / n_tok,
        "clip_high_frac": ((ratio > 1 + epsilon_high) & (adv > 0) & mask_BxT).sum() / n_tok,
        "ratio_min": jnp.where(mask_BxT, ratio, jnp.inf).min(),
        "ratio_max": jnp.where(mask_BxT, ratio, -jnp.inf).max(),
        "tokens": mask.sum(),
    }
    if beta:
        stats["kl"] = (kl_BxT * mask).sum() / n_tok
    return num, den, stats


def overlong_penalty(length_B, max_len: int, cache: int):
    """DAPO's soft overlong penalty: 0 up to max_len - cache tokens, then linear down to -1 at max_len."""
    start = max_len - cache
    return jnp.where(length_B <= start, 0.0, jnp.maximum((start - length_B) / cache, -1.0))


def zero_std_groups(rewards_PxG, valid_PxG):
    """[P] bool: groups whose valid rewards are all equal (they teach nothing; DAPO drops them)."""
    r = jnp.where(valid_PxG, rewards_PxG, jnp.nan)
    spread = jnp.nanmax(r, -1) - jnp.nanmin(r, -1)
    return ~(spread > 0)  # NaN (no valid member) counts as zero spread
