"""One rollout: prompts -> G completions each (sampler) -> rewards -> group-relative advantages, and
the arrays the update trains on.

Shape letters: P prompts per rollout, G samples per prompt, B = P * G rows (group-major), Lp prompt
bucket, N completion bucket (the longest completion rounded up to a power of two), T = Lp + N,
M minibatches per pass over the rollout, K micro-batches per minibatch, R rows per micro-batch.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import numpy as np

from r1zero import grpo, rewards
from r1zero.config import TrainConfig
from r1zero.metrics import reflective_rates, text_stats
from r1zero.models import Decoder
from r1zero.sampler import Samples, bucket, sample
from r1zero.tokenizer import Tokenizer


@dataclasses.dataclass
class Rollout:
    """Completions with their rewards, rows group-major."""

    samples: Samples
    examples: list[dict]  # the example of each row
    scored: rewards.Scored  # total_B: the reward the advantages use (with the overlong penalty)
    adv: np.ndarray | None = None  # [B] once assembled
    zero_std_frac: float = 0.0  # share of the first round's groups whose rewards were all equal
    tries: int = 1  # sampling rounds it took (dynamic sampling)

    def take(self, rows: np.ndarray) -> Rollout:
        return Rollout(self.samples.take(rows), [self.examples[i] for i in rows], self.scored.take(rows))

    @staticmethod
    def concat(parts: list[Rollout]) -> Rollout:
        return Rollout(Samples.concat([r.samples for r in parts]), sum((r.examples for r in parts), []),
                       rewards.Scored.concat([r.scored for r in parts]))


def score(samples: Samples, examples: list[dict], config: TrainConfig, step: int) -> rewards.Scored:
    """The task's weighted rewards (plus DAPO's overlong penalty), with the accuracy and format
    checks measured alongside for the metrics."""
    weights = dict(zip(config.task.rewards, config.task.reward_weights))
    scored = rewards.score(samples.texts, examples, weights, rewards.Context(seed=config.seed, step=step, code=config.code),
                           measure=(config.task.accuracy_reward, "format"))
    if config.grpo.overlong_cache:
        lengths_B = samples.completion_mask.sum(1)
        penalty_B = grpo.overlong_penalty(lengths_B, config.sampling.max_new_tokens, config.grpo.overlong_cache)
        scored = dataclasses.replace(scored, total=scored.total + np.asarray(penalty_B))
    return scored


def collect_rollout(model: Decoder, tok: Tokenizer, prompts: Iterator[list[dict]], key: jax.Array,
                    config: TrainConfig, step: int, mesh=None) -> Rollout:
    """Samples and scores P prompts x G completions and computes their advantages. With dynamic
    sampling (DAPO), groups whose rewards are all equal are replaced by groups of fresh prompts
    (up to max_sampling_tries rounds; round r samples with fold_in(key, r))."""
    P, G = config.prompts_per_rollout, config.sampling.num_samples
    rounds, zero_std = [], []  # per round: a Rollout of P groups, [P] bool
    while True:
        examples = next(prompts)
        samples = sample(model, [ex["prompt"] for ex in examples], jax.random.fold_in(key, len(rounds)),
                         config.sampling, tok, mesh)
        rows = [ex for ex in examples for _ in range(G)]
        scored = score(samples, rows, config, step)
        rounds.append(Rollout(samples, rows, scored))
        zero_std.append(np.asarray(grpo.zero_std_groups(scored.total.reshape(P, G), scored.valid.reshape(P, G))))
        informative = _fewest_on_any_host(int((~np.concatenate(zero_std)).sum()))
        if not config.grpo.dynamic_sampling or informative >= P or len(rounds) >= config.grpo.max_sampling_tries:
            break
    groups = [(r, p) for r in range(len(rounds)) for p in range(P)]
    if config.grpo.dynamic_sampling:  # informative groups first; zero-std groups only as filler
        groups.sort(key=lambda rp: bool(zero_std[rp[0]][rp[1]]))
    ro = Rollout.concat([rounds[r].take(np.arange(p * G, (p + 1) * G)) for r, p in groups[:P]])
    g = config.grpo
    adv_PxG = grpo.advantages(ro.scored.total.reshape(P, G), ro.scored.valid.reshape(P, G), g.advantage,
                              g.std_eps, g.std_ddof)
    return dataclasses.replace(ro, adv=np.asarray(adv_PxG).reshape(-1), zero_std_frac=float(zero_std[0].mean()),
                               tries=len(rounds))


def _fewest_on_any_host(n: int) -> int:
    """The smallest `n` over all hosts: sampling is collective, so every host runs the same rounds."""
    return int(_over_hosts(np.asarray(n), np.min))


def _over_hosts(x: np.ndarray, reduce) -> np.ndarray:
    """`reduce` (np.min, np.max) of `x` over all hosts, elementwise."""
    return reduce(_all_hosts(x), axis=0)


# ---------------------------------------------------------------------------------------------------
# From a rollout to what the update trains on.


def train_arrays(ro: Rollout, config: TrainConfig) -> dict[str, np.ndarray]:
    """Arrays for the loss: tokens and mask [B, Lp + N] (prompt + completion, trimmed to the longest
    completion rounded up to a power of two: few compiles); loss_mask and old_logp [B, N] for the
    completion columns alone (the trainer computes no logits for the prompt); adv [B]."""
    s = ro.samples
    N = completion_width(s.completion_mask)
    loss_mask_BxN = s.completion_mask[:, :N] & ro.scored.valid[:, None]
    if config.grpo.mask_truncated:
        loss_mask_BxN &= (np.asarray(s.finish_reason) != "length")[:, None]
    return {
        "tokens": np.concatenate([s.prompt_tokens, s.completion_tokens[:, :N]], 1).astype(np.int32),
        "mask": np.concatenate([s.prompt_mask, s.completion_mask[:, :N]], 1),
        "loss_mask": loss_mask_BxN,  # these two cover the completion only: the last N of the Lp + N columns
        "old_logp": s.logprobs[:, :N].astype(np.float32),
        "adv": ro.adv.astype(np.float32),
    }


def completion_width(completion_mask_BxN: np.ndarray) -> int:
    """The loss columns of a rollout: its longest completion rounded up to a power of two (few
    compiled programs), the same on every host (the longest over all of them)."""
    longest = int(_over_hosts(np.asarray(completion_mask_BxN.sum(1).max()), np.max))
    return bucket(longest, 8, completion_mask_BxN.shape[1])


def minibatches(arrays: dict[str, np.ndarray], config: TrainConfig, rollout: int,
                layout: tuple[np.ndarray, np.ndarray] | None = None) -> list[list[dict[str, np.ndarray]]]:
    """Every step of a rollout in order (`step_rows`: which rows, cut to which widths), each a list
    of K micro-batches of R rows. With `optim.share_prompts` each step also carries its groups'
    prompts once (`_share`): the update runs each prompt once instead of once per row.
    layout: `step_rows(arrays, config, rollout)`, when the caller has it already."""
    steps_SxKxR, widths_SxK = layout if layout is not None else step_rows(arrays, config, rollout)
    mbs = [[_cut(arrays, r, int(w)) for r, w in zip(rows_KxR, w_K)] for rows_KxR, w_K in zip(steps_SxKxR, widths_SxK)]
    if config.optim.share_prompts and arrays["tokens"].shape[1] - arrays["loss_mask"].shape[1] >= 2:
        mbs = _share(arrays, steps_SxKxR, mbs, config.sampling.num_samples)  # (a one-token prompt: nothing to share)
    return mbs


def step_rows(arrays: dict[str, np.ndarray], config: TrainConfig, rollout: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows_SxKxR, widths_SxK): the rows of each micro-batch of each of the rollout's steps (`mu`
    passes, each a fresh shuffle into M minibatches of whole groups: the first M steps hold every
    row once) and the loss columns each keeps. The order depends only on (seed, rollout), so a run
    resumed in the middle of a rollout continues with the same minibatches.

    With K > 1 the minibatch's rows are sorted by the length of their loss span (stable) before they
    are cut into micro-batches, and each micro-batch keeps only the columns up to its own longest
    span, rounded up to a power of two: the update pays for the lengths completions have, not K times
    the longest one's. The loss is the same (a sum over rows, divided by the global count): only the
    order of the sum changes (and the logits' chunking). Every host cuts to the same widths (its
    micro-batch k is a slice of the global one; `completion_width` gives every host the same W)."""
    G, M, K = config.sampling.num_samples, config.num_minibatches, config.optim.micro_batches
    P, W = len(arrays["adv"]) // G, arrays["loss_mask"].shape[1]
    span_B = np.where(arrays["loss_mask"].any(1), W - np.argmax(arrays["loss_mask"][:, ::-1], 1), 0)
    steps = []  # per step, the rows of each micro-batch [K, R]
    for pass_ in range(config.mu):
        order = np.random.default_rng([config.seed, rollout, pass_]).permutation(P).reshape(M, P // M)
        for chosen in order:  # the groups of one minibatch
            idx = (chosen[:, None] * G + np.arange(G)).reshape(-1)
            steps.append(idx[None] if K == 1 else idx[np.argsort(span_B[idx], kind="stable")].reshape(K, -1))
    steps = np.asarray(steps)  # [steps, K, R]
    if K == 1:
        return steps, np.full(steps.shape[:2], W)
    # one exchange for the whole rollout
    widths = _over_hosts(np.vectorize(lambda span: bucket(max(int(span), 1), 8, W))(span_B[steps].max(-1)), np.max)
    return steps, widths


def _cut(arrays: dict[str, np.ndarray], rows: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """`rows` of the training arrays with the loss columns cut to the first `width` (tokens and mask
    keep the prompt columns before them: causal attention, so later columns change nothing)."""
    drop = arrays["loss_mask"].shape[1] - width
    if drop < 0:
        raise ValueError(f"cannot cut {arrays['loss_mask'].shape[1]} loss columns to {width}")
    cut = lambda v: v[rows, : v.shape[1] - drop] if v.ndim == 2 else v[rows]
    return {k: cut(v) for k, v in arrays.items()}


def _share(arrays, steps_SxKxR, mbs, G: int) -> list[list[dict[str, np.ndarray]]]:
    """The micro-batches with each group's prompt written once per minibatch: `prefix_tokens` and
    `prefix_mask` [U, Lp - 1] (every prompt column but the last, of the minibatch's groups on every
    host, in process order: one table, placed replicated, the same in each of the step's
    micro-batches), `prefix_of_row` [R] (the row's prompt in that table), and `tokens`/`mask`
    [R, 1 + width] keep only the last prompt column (its logits score the first completion token)
    and the completion."""
    Lp = arrays["tokens"].shape[1] - arrays["loss_mask"].shape[1]
    group_B = np.arange(len(arrays["adv"])) // G  # rows are group-major: group g starts at row g * G
    prompt_Bx2xL = np.stack([arrays["tokens"][:, :Lp - 1], arrays["mask"][:, :Lp - 1]], 1).astype(np.int32)
    bad = np.flatnonzero((prompt_Bx2xL != prompt_Bx2xL[group_B * G]).any((1, 2)))
    if _over_hosts(np.asarray(len(bad)), np.max):  # every host raises (none waits in the exchange below)
        where = f"row {bad[0]} does not have its group's prompt (group {group_B[bad[0]]})" if len(bad) else \
            "a row on another host does not have its group's prompt"
        raise ValueError(f"{where}: no prompt to share")
    groups_SxQ = np.array([np.unique(group_B[rows]) for rows in steps_SxKxR.reshape(len(steps_SxKxR), -1)])
    everyone = _all_hosts(prompt_Bx2xL[groups_SxQ * G])  # [H, S, Q, 2, Lp - 1]
    H, Q, me = everyone.shape[0], groups_SxQ.shape[1], jax.process_index()
    for s, k in np.ndindex(steps_SxKxR.shape[:2]):
        table, mb = everyone[:, s].reshape(H * Q, 2, Lp - 1), mbs[s][k]
        mbs[s][k] = {**mb, "tokens": mb["tokens"][:, Lp - 1:], "mask": mb["mask"][:, Lp - 1:],
                     "prefix_tokens": table[:, 0], "prefix_mask": table[:, 1].astype(bool),
                     "prefix_of_row": me * Q + np.searchsorted(groups_SxQ[s], group_B[steps_SxKxR[s, k]]).astype(np.int32)}
    return mbs


def _all_hosts(x: np.ndarray) -> np.ndarray:
    """[H, ...]: `x` of every host, in process order (H = 1 on one host)."""
    if jax.process_count() == 1:
        return x[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x))


# ---------------------------------------------------------------------------------------------------
# What is logged of a rollout.


def rollout_metrics(ro: Rollout, config: TrainConfig, seconds: float) -> dict[str, float]:
    """The rollout's numbers (logged with its first step): rewards, R1-Zero's text statistics,
    reflective words one by one, truncation, sampling effort and speed."""
    s, task = ro.samples, config.task
    lengths_B = s.completion_mask.sum(1)
    m = {
        "reward/mean": float(ro.scored.total.mean()), "reward/std": float(ro.scored.total.std()),
        **text_stats(s.texts, lengths_B, rewards.passed(ro.scored.parts[task.accuracy_reward]),
                     rewards.passed(ro.scored.parts["format"]), golds=[str(ex.get("answer", "")) for ex in ro.examples]),
        "zero_adv_group_frac": ro.zero_std_frac, "could_not_score": int((~ro.scored.valid).sum()),
        "length_max": int(lengths_B.max()),
        "truncated_frac": float(np.mean(np.asarray(s.finish_reason) == "length")),
        "truncated_prompts": s.num_truncated_prompts,
        "rollout_seconds": seconds, "rollout_tokens_per_s": float(lengths_B.sum() / max(seconds, 1e-9)),
        "sampling_tries": ro.tries,
    }
    m.update({f"reward/{k}": float(np.nanmean(ro.scored.parts[k])) for k in task.rewards})
    m.update(reflective_rates(list(s.texts), "reflect"))  # each word, for first-appearance curves
    return m


def completion_rows(ro: Rollout, config: TrainConfig) -> list[dict]:
    """The first `log_completions` rows for completions.jsonl."""
    correct_B = rewards.passed(ro.scored.parts[config.task.accuracy_reward])
    rows = []
    for i in range(min(config.log_completions, len(ro.samples.texts))):
        rows.append({"prompt": ro.examples[i]["prompt"], "answer": ro.examples[i].get("answer"),
                     "completion": ro.samples.texts[i], "finish": ro.samples.finish_reason[i],
                     "reward": float(ro.scored.total[i]), "advantage": float(ro.adv[i]),
                     "correct": bool(correct_B[i]),
                     **{f"reward/{k}": float(ro.scored.parts[k][i]) for k in config.task.rewards}})
    return rows
