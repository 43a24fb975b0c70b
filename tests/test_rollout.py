"""From a rollout to the update's minibatches: whole groups, sorted and cut micro-batches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from r1zero.config import OptimConfig
from r1zero.rollout import minibatches
from tests.test_train import tiny_config

LP, W = 5, 64  # prompt columns, loss columns


def rollout_arrays(seed: int, B: int = 32, ref: bool = True) -> dict[str, np.ndarray]:
    """Training arrays of B rows as `train_arrays` makes them, with completions of long-tailed
    lengths (some empty, some the whole budget); adv[i] = i names the row."""
    rng = np.random.default_rng(seed)
    span_B = np.minimum(rng.geometric(0.08, B), W)
    span_B[:3] = (0, W, 1)
    loss_mask = np.arange(W)[None, :] < span_B[:, None]
    arrays = {
        "tokens": rng.integers(0, 40, (B, LP + W)).astype(np.int32),
        "mask": np.concatenate([np.ones((B, LP), bool), loss_mask], 1),
        "loss_mask": loss_mask,
        "old_logp": np.where(loss_mask, -rng.uniform(0.5, 4, (B, W)), 0).astype(np.float32),
        "adv": np.arange(B, dtype=np.float32),
    }
    if ref:
        arrays["ref_logp"] = np.where(loss_mask, -rng.uniform(0.5, 4, (B, W)), 0).astype(np.float32)
    return arrays


def config_with(K: int, **kw):
    return tiny_config(prompts_per_rollout=8, num_minibatches=2, mu=2, optim=OptimConfig(micro_batches=K), **kw)


def test_micro_batches_are_sorted_by_length_and_cut_to_their_longest_completion():
    arrays = rollout_arrays(0)
    span_B = arrays["loss_mask"].sum(1)
    steps = minibatches(arrays, config_with(4), rollout=3)
    assert len(steps) == 4  # mu x M
    G = 4
    for pass_ in range(2):
        seen = []
        for micro in steps[2 * pass_: 2 * pass_ + 2]:
            assert [len(mb["adv"]) for mb in micro] == [4] * 4  # K micro-batches of R rows
            rows = [int(r) for mb in micro for r in mb["adv"]]
            groups = {r // G for r in rows}
            assert sorted(rows) == sorted(g * G + i for g in groups for i in range(G))  # whole groups
            seen += rows
            for k, mb in enumerate(micro):
                idx = mb["adv"].astype(int)
                longest, width = int(span_B[idx].max()), mb["loss_mask"].shape[1]
                assert width in (8, 16, 32, 64) and width >= longest and (width == 8 or width < 2 * longest)
                if k:  # sorted: no row here is shorter than the previous micro-batch's longest
                    assert span_B[idx].min() >= span_B[micro[k - 1]["adv"].astype(int)].max()
                assert mb["tokens"].shape[1] == mb["mask"].shape[1] == LP + width
                for key in ("loss_mask", "old_logp", "ref_logp"):
                    np.testing.assert_array_equal(mb[key], arrays[key][idx, :width])
                for key in ("tokens", "mask"):
                    np.testing.assert_array_equal(mb[key], arrays[key][idx, :LP + width])
                assert not arrays["loss_mask"][idx, width:].any()  # nothing the loss counts is cut off
        assert sorted(seen) == list(range(32))  # each pass uses every row once


def test_one_micro_batch_keeps_the_groups_in_order_at_full_width():
    arrays = rollout_arrays(1)
    one = minibatches(arrays, config_with(1), rollout=3)
    four = minibatches(arrays, config_with(4), rollout=3)
    for [mb], micro in zip(one, four):
        rows_PxG = mb["adv"].astype(int).reshape(-1, 4)
        assert mb["loss_mask"].shape[1] == W
        np.testing.assert_array_equal(rows_PxG, rows_PxG[:, :1] + np.arange(4))  # whole groups, in order
        assert np.all(rows_PxG[:, 0] % 4 == 0)
        rows = rows_PxG.reshape(-1)
        assert sorted(rows) == sorted(int(r) for m in micro for r in m["adv"])  # same groups as with K = 4


@pytest.mark.parametrize("aggregation, gspo", [("seq-mean-token-mean", False), ("token-mean", False),
                                               ("constant", False), ("seq-mean-token-mean", True)])
def test_sorted_cut_micro_batches_give_the_full_width_step(aggregation, gspo):
    """Four micro-batches cut to their own lengths take the same optimizer step as the whole
    minibatch at the full width (loss, statistics, parameters), KL term included; also with
    sequence-level ratios (GSPO), left-padded prompts, a hole in a loss mask, a truncated row the
    loss leaves out, and logits computed in chunks narrower than the rows."""
    import jax

    from r1zero.config import GRPOConfig
    from tests.test_train import fresh_state, host

    arrays = rollout_arrays(2, ref=True)
    arrays["adv"] = np.random.default_rng(3).normal(size=32).astype(np.float32)
    if gspo:
        arrays["mask"][::3, :2] = False  # left padding
        arrays["loss_mask"][4, 1] = False  # a hole (the row still spans to its end)
        arrays["loss_mask"][1] = False  # truncated, masked: the loss skips it, its tokens stay
    arrays["tokens"] = np.where(arrays["mask"], arrays["tokens"], 0)
    results = []
    for K in (1, 4):
        config = config_with(K, grpo=GRPOConfig(aggregation=aggregation, beta=0.05, sequence_ratio=gspo))
        config = dataclasses.replace(config, optim=OptimConfig(learning_rate=1e-2, eps=1.0, max_grad_norm=1e9,
                                                               micro_batches=K),
                                     logprob_chunk_tokens=64 if gspo else config.logprob_chunk_tokens)
        steps = minibatches(arrays, config, rollout=0)
        assert len({mb["loss_mask"].shape[1] for mb in steps[0]}) == (1 if K == 1 else 3)  # the cut happened
        params, opt_state, step = fresh_state(config)
        params, opt_state, stats = step(params, opt_state, steps[0])
        results.append((host(params), jax.device_get(stats)))
    (p1, s1), (p4, s4) = results
    for key in ("loss", "grad_norm", "entropy", "kl", "logp_diff_mean", "logp_diff_max", "clip_low_frac",
                "clip_high_frac", "ratio_min", "ratio_max"):
        assert float(s1[key]) == pytest.approx(float(s4[key]), rel=1e-5, abs=1e-7), key
    for a, b in zip(p1, p4):
        np.testing.assert_allclose(a, b, atol=1e-7)
