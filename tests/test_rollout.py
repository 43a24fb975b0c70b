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
    return tiny_config(**{"prompts_per_rollout": 8, "num_minibatches": 2, "mu": 2, "optim": OptimConfig(micro_batches=K),
                          **kw})


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


def group_prompts(arrays: dict[str, np.ndarray], G: int = 4) -> dict[str, np.ndarray]:
    """The arrays with every row's prompt columns those of its group's first row (as a rollout's are)."""
    first_B = np.arange(len(arrays["adv"])) // G * G
    for key in ("tokens", "mask"):
        arrays[key][:, :LP] = arrays[key][first_B, :LP]
    return arrays


@pytest.mark.parametrize("aggregation, gspo", [("seq-mean-token-mean", False), ("token-mean", False),
                                               ("constant", False), ("seq-mean-token-mean", True)])
def test_sorted_cut_micro_batches_give_the_full_width_step(aggregation, gspo):
    """Four micro-batches cut to their own lengths take the same optimizer step as the whole
    minibatch at the full width (loss, statistics, parameters), KL term included; so do micro-batches
    that carry each group's prompt once (`share_prompts`, one or four micro-batches); also with
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
    arrays = group_prompts(arrays)
    results = []
    for K, share in ((1, False), (4, False), (1, True), (4, True)):
        config = config_with(K, grpo=GRPOConfig(aggregation=aggregation, beta=0.05, sequence_ratio=gspo))
        config = dataclasses.replace(config, optim=OptimConfig(learning_rate=1e-2, eps=1.0, max_grad_norm=1e9,
                                                               micro_batches=K, share_prompts=share),
                                     logprob_chunk_tokens=64 if gspo else config.logprob_chunk_tokens)
        steps = minibatches(arrays, config, rollout=0)
        assert len({mb["loss_mask"].shape[1] for mb in steps[0]}) == (1 if K == 1 else 3)  # the cut happened
        for mb in steps[0]:  # shared: the prompt columns but the last are in the table, once per group
            assert ("prefix_tokens" in mb) == share
            assert mb["tokens"].shape[1] == mb["loss_mask"].shape[1] + (1 if share else LP)
        params, opt_state, step = fresh_state(config)
        params, opt_state, stats = step(params, opt_state, steps[0])
        results.append((host(params), jax.device_get(stats)))
    (p1, s1) = results[0]
    for p, s in results[1:]:
        for key in ("loss", "grad_norm", "entropy", "kl", "logp_diff_mean", "logp_diff_max", "clip_low_frac",
                    "clip_high_frac", "ratio_min", "ratio_max"):
            assert float(s1[key]) == pytest.approx(float(s[key]), rel=1e-5, abs=1e-7), key
        for a, b in zip(p1, p):
            np.testing.assert_allclose(a, b, atol=1e-7)


@pytest.mark.parametrize("K", [1, 4])
def test_shared_micro_batches_carry_each_groups_prompt_once(K):
    """With `share_prompts` each step holds a table of its groups' prompts (all columns but the
    last), once each, and each row's index into it; the rows keep the last prompt column and their
    completion."""
    arrays = group_prompts(rollout_arrays(0))
    arrays["mask"][8:12, :2] = False  # one group's prompt is left-padded
    config = config_with(K, optim=OptimConfig(micro_batches=K, share_prompts=True))
    for micro in minibatches(arrays, config, rollout=3):
        table = micro[0]["prefix_tokens"]
        assert table.shape == (4, LP - 1)  # the minibatch's 4 groups
        used = set()
        for mb in micro:
            rows, width = mb["adv"].astype(int), mb["loss_mask"].shape[1]
            np.testing.assert_array_equal(mb["prefix_tokens"], table)  # one table per step
            for key in ("tokens", "mask"):
                np.testing.assert_array_equal(mb[f"prefix_{key}"][mb["prefix_of_row"]], arrays[key][rows, :LP - 1])
                np.testing.assert_array_equal(mb[key], arrays[key][rows, LP - 1:LP + width])
            used |= {(int(i), int(r) // 4) for i, r in zip(mb["prefix_of_row"], rows)}
        assert sorted(i for i, _ in used) == [0, 1, 2, 3] == sorted({i for i, _ in used})  # one entry per group
    arrays["tokens"][5, 1] += 1  # a row whose prompt is not its group's
    with pytest.raises(ValueError, match="row 5 does not have its group's prompt"):
        minibatches(arrays, config, rollout=3)


@pytest.mark.parametrize("K, share", [(1, False), (4, False), (4, True)])
def test_log_prob_passes_on_the_update_layout_are_the_full_rows(K, share):
    """The trainer's old and reference log-prob passes run on one pass of the update's micro-batches
    (cut to their widths, prompts shared): the log-probs of a forward over the full rows, in every
    column a micro-batch keeps, and 0 past it (left-padded prompts included)."""
    import jax
    from flax import nnx

    from r1zero.config import MeshConfig
    from r1zero.models import create_model, logprob_pass
    from r1zero.rollout import step_rows
    from r1zero.sharding import make_mesh, rows_to_global
    from r1zero.train import pass_logprobs
    from tests.test_train import TINY

    arrays = rollout_arrays(4, ref=False)
    arrays["mask"][8:12, :2] = False  # one group's prompt is left-padded
    arrays["loss_mask"][1] = False  # truncated, masked: its tokens run the whole width, its span is 0
    arrays["tokens"] = np.where(arrays["mask"], arrays["tokens"], 0)
    arrays = group_prompts(arrays)
    mesh = make_mesh(MeshConfig())
    graphdef, params, rest = nnx.split(create_model(TINY, mesh, seed=0), nnx.Param, ...)
    fn = logprob_pass(graphdef, rest, mesh, temperature=0.7, chunk_tokens=64)
    full_BxW = np.asarray(jax.device_get(fn(params, *rows_to_global((arrays["tokens"], arrays["mask"]), mesh),
                                            start=LP)))
    config = config_with(K, optim=OptimConfig(micro_batches=K, share_prompts=share))
    rows_SxKxR, widths_SxK = step_rows(arrays, config, rollout=1)
    M = config.num_minibatches
    steps = minibatches(arrays, config, 1, (rows_SxKxR[:M], widths_SxK[:M]))
    assert all(("prefix_tokens" in mb) == share for mb in steps[0])
    got_BxW = pass_logprobs(fn, params, steps, rows_SxKxR[:M], full_BxW.shape, mesh)
    expected_BxW = full_BxW.copy()
    for rows_KxR, w_K in zip(rows_SxKxR[:M], widths_SxK[:M]):
        for rows_R, w in zip(rows_KxR, w_K):
            expected_BxW[rows_R, w:] = 0.0
    assert (K == 1) == (expected_BxW == full_BxW).all()  # with K = 4 some columns are cut
    assert np.abs(full_BxW[arrays["loss_mask"]]).min() > 0  # every column the loss counts has a log-prob
    assert np.all(expected_BxW[arrays["loss_mask"]] != 0)  # and no cut drops one
    np.testing.assert_allclose(got_BxW, expected_BxW, atol=2e-5)
