"""The train step (accumulation, skipping) and end-to-end runs of the loop."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from r1zero import train as train_mod
from r1zero.config import GRPOConfig, MeshConfig, ModelConfig, OptimConfig, SamplingConfig, TaskConfig, TrainConfig
from r1zero.errors import UserError
from r1zero.models import create_model
from r1zero.sharding import make_mesh

TINY = ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                   num_kv_heads=2, head_dim=8, qkv_bias=True, tie_embeddings=True)


def tiny_config(**kw) -> TrainConfig:
    base = TrainConfig(
        model=TINY,
        sampling=SamplingConfig(num_samples=4, max_new_tokens=1, temperature=1.0, max_prompt_len=16),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=0),
        task=TaskConfig(dataset="digits", operation="max", difficulty=3, eval_size=64),
        steps=30, prompts_per_rollout=16, eval_every=0,
    )
    return dataclasses.replace(base, **kw)


def make_batch(seed, B=8, T=10, K=1):
    rng = np.random.default_rng(seed)
    loss_mask = np.zeros((B, T), bool)
    loss_mask[:, 6:] = rng.random((B, 4)) > 0.2
    batch = {
        "tokens": rng.integers(0, TINY.vocab_size, (B, T)).astype(np.int32),
        "mask": np.ones((B, T), bool),
        "loss_mask": loss_mask,
        "old_logp": np.where(loss_mask, -rng.uniform(2, 5, (B, T)), 0).astype(np.float32),
        "adv": rng.normal(size=B).astype(np.float32),
    }
    return [{k: v[i * B // K:(i + 1) * B // K] for k, v in batch.items()} for i in range(K)]  # K micro-batches


def fresh_state(config):
    mesh = make_mesh(MeshConfig())
    model = create_model(config.model, mesh, seed=0)
    graphdef, params, rest, opt_state, step = train_mod.init_training(model, config, mesh)
    return params, opt_state, step


def host(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


@pytest.mark.parametrize("aggregation", ["seq-mean-token-mean", "token-mean", "constant"])
def test_gradient_accumulation_equals_the_full_batch(aggregation):
    # A large Adam epsilon makes the update proportional to the gradient, so rounding is not amplified.
    results = []
    for K in (1, 4):
        config = tiny_config(optim=OptimConfig(learning_rate=1e-2, eps=1.0, micro_batches=K, max_grad_norm=1e9),
                             grpo=GRPOConfig(aggregation=aggregation))
        params, opt_state, step = fresh_state(config)
        params, opt_state, stats = step(params, opt_state, make_batch(0, K=K))
        results.append((host(params), jax.device_get(stats)))
    (p1, s1), (p4, s4) = results
    assert s1["loss"] == pytest.approx(float(s4["loss"]), rel=1e-5)
    assert s1["grad_norm"] == pytest.approx(float(s4["grad_norm"]), rel=1e-5)
    for a, b in zip(p1, p4):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_loss_arrays_over_the_completion_alone_give_the_full_width_step():
    """The trainer passes loss_mask/old_logp for the last W columns only (no logits for the prompt):
    the same step as the full-width arrays whose first T - W columns are masked out."""
    results = []
    for width in (10, 4):
        config = tiny_config(optim=OptimConfig(learning_rate=1e-2, eps=1.0, max_grad_norm=1e9), grpo=GRPOConfig(beta=0.0))
        params, opt_state, step = fresh_state(config)
        [mb] = make_batch(0)
        batch = [{k: v[..., 10 - width:] if k in ("loss_mask", "old_logp") else v for k, v in mb.items()}]
        params, opt_state, stats = step(params, opt_state, batch)
        results.append((host(params), jax.device_get(stats)))
    (p_full, s_full), (p_tail, s_tail) = results
    for key in ("loss", "grad_norm", "entropy", "logp_diff_mean", "clip_low_frac"):
        assert s_full[key] == pytest.approx(float(s_tail[key]), rel=1e-5), key
    for a, b in zip(p_full, p_tail):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_normal_step_changes_parameters_and_skips_leave_everything_untouched():
    config = tiny_config(optim=OptimConfig(learning_rate=1e-2, weight_decay=0.1))
    params, opt_state, step = fresh_state(config)
    before_p, before_o = host(params), host(opt_state)

    zero_adv = make_batch(1)
    zero_adv[0]["adv"][:] = 0.0
    masked = make_batch(2)
    masked[0]["loss_mask"][:] = False
    nan = make_batch(3)
    nan[0]["old_logp"][0, 7] = np.nan
    nan[0]["loss_mask"][0, 7] = True
    for batch, counter in ((zero_adv, "empty"), (masked, "empty"), (nan, "nonfinite")):
        params, opt_state, stats = step(params, opt_state, batch)
        assert bool(stats[counter]) and not bool(stats["applied"])
        for a, b in zip(host(params) + host(opt_state), before_p + before_o):
            np.testing.assert_array_equal(a, b)  # no weight decay, no moment or count update

    params, opt_state, stats = step(params, opt_state, make_batch(4))
    assert bool(stats["applied"])
    assert any(not np.array_equal(a, b) for a, b in zip(host(params), before_p))
    assert any(not np.array_equal(a, b) for a, b in zip(host(opt_state), before_o))


def test_the_step_donates_parameters_and_optimizer_state():
    """The update donates the parameters and the optimizer state: their old buffers are reused in place."""
    params, opt_state, step = fresh_state(tiny_config())
    new_params, new_opt, _ = step(params, opt_state, make_batch(0))
    assert all(x.is_deleted() for x in jax.tree.leaves((params, opt_state)))
    assert not any(x.is_deleted() for x in jax.tree.leaves((new_params, new_opt)))


def test_random_streams_never_collide():
    keys = [train_mod.stream_key(0, "eval")] + [train_mod.stream_key(0, "rollout", r) for r in range(500)]
    data = {tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in keys}
    assert len(data) == len(keys)
    assert np.array_equal(jax.random.key_data(train_mod.stream_key(0, "rollout", 3)),
                          jax.random.key_data(jax.random.fold_in(jax.random.key(0), 5)))  # the table: 2 + r


def test_resume_rule_names_what_changed_and_records_harmless_changes(tmp_path):
    from r1zero.config import to_dict

    config = tiny_config(optim=OptimConfig(learning_rate=3e-3, schedule="cosine"))
    (tmp_path / "config.json").write_text(json.dumps(to_dict(config)))
    (tmp_path / "checkpoints" / "5").mkdir(parents=True)  # a run with a checkpoint is bound to its config
    before = (tmp_path / "config.json").read_text()
    for changed, key in ((dict(seed=1), "seed"), (dict(steps=60), "steps"),  # cosine decays to the last step
                         (dict(optim=OptimConfig(learning_rate=1.0, schedule="cosine")), "optim.learning_rate")):
        with pytest.raises(UserError, match=rf"different config \(changed: {key}\)"):
            train_mod.train(dataclasses.replace(config, **changed), tmp_path, progress=False)
    assert (tmp_path / "config.json").read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock", "checkpoints", "config.json"]  # refused before anything was written
    train_mod.check_resume(dataclasses.replace(config, eval_every=7, log_completions=2), tmp_path)
    assert json.loads((tmp_path / "overrides.jsonl").read_text()) == {"eval_every": 7, "log_completions": 2}
    constant = tiny_config()
    assert "steps" in train_mod.resumable_fields(constant) and "steps" not in train_mod.resumable_fields(config)


@pytest.mark.parametrize("change, message", [
    (dict(grpo=GRPOConfig(advantage="ppo")), "grpo.advantage must be one of grpo, mean_only"),
    (dict(grpo=GRPOConfig(aggregation="sum")), "grpo.aggregation must be one of"),
    (dict(grpo=GRPOConfig(kl_estimator="k4")), "grpo.kl_estimator must be one of"),
    (dict(task=TaskConfig(dataset="digitz")), "task.dataset: unknown dataset 'digitz'"),
    (dict(task=TaskConfig(rewards=("acc",), reward_weights=(1.0,))), "unknown reward 'acc'"),
    (dict(task=TaskConfig(accuracy_reward="acc")), "unknown reward 'acc'"),
    (dict(task=TaskConfig(template="no slot")), "template 'no slot'"),
    (dict(task=TaskConfig(dataset="jsonl", path="/nonexistent/x.jsonl")), "task.path /nonexistent/x.jsonl does not"),
])
def test_names_and_files_are_checked_before_anything_is_written(tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        train_mod.train(tiny_config(**change), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_first_minibatch_logprobs_agree_with_the_sampler(tmp_path):
    """Logged every rollout: |sampler - trainer| log-prob difference on the first (on-policy) step."""
    config = tiny_config(steps=2, sampling=SamplingConfig(num_samples=4, max_new_tokens=3, max_prompt_len=16))
    train_mod.train(config, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["step"] == 1)
    assert first["logp_diff_max"] < 1e-5 and abs(first["loss"]) < 1e-5  # on-policy: ratio 1


@pytest.mark.slow
def test_reward_rises_and_runs_are_reproducible(tmp_path):
    config = tiny_config(steps=40, sampling=SamplingConfig(num_samples=8, max_new_tokens=1, max_prompt_len=16))
    a = train_mod.train(config, tmp_path / "a", progress=False)
    b = train_mod.train(config, tmp_path / "b", progress=False)
    rows = lambda d: [json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    timing = ("seconds", "tokens_per_s")
    strip = lambda r: {k: v for k, v in r.items() if not any(t in k for t in timing)}
    assert [strip(r) for r in rows("a")] == [strip(r) for r in rows("b")]  # same seed, same run
    assert a == b
    reward = [r["reward/mean"] for r in rows("a") if "reward/mean" in r]
    assert np.mean(reward[-5:]) > np.mean(reward[:5]) + 0.15, reward
    assert a["end"]["eval/greedy_accuracy"] > a["start"]["eval/greedy_accuracy"] + 0.2
    for name in ("config.json", "model_config.json", "tokenizer/tokenizer.json", "completions.jsonl",
                 "summary.json", "final/model.safetensors", "final/config.json"):
        assert (tmp_path / "a" / name).is_file(), name
    assert list((tmp_path / "a" / "tensorboard").iterdir())
    completion = json.loads((tmp_path / "a" / "completions.jsonl").read_text().splitlines()[0])
    assert {"prompt", "completion", "reward", "advantage", "reward/exact_match"} <= set(completion)


@pytest.mark.slow
def test_every_option_runs_together(tmp_path):
    """KL with reference resets, dynamic sampling, DAPO masking and overlong penalty, recomputed old
    log-probs, GSPO ratios, minibatches, micro-batches and mu > 1 in one short run."""
    config = tiny_config(
        steps=8, num_minibatches=2, mu=2, prompts_per_rollout=8,
        sampling=SamplingConfig(num_samples=4, max_new_tokens=3, max_prompt_len=16),
        grpo=GRPOConfig(beta=0.01, ref_reset_every=3, dynamic_sampling=True, max_sampling_tries=2,
                        mask_truncated=True, overlong_cache=2, recompute_old_logprobs=True,
                        sequence_ratio=True, epsilon_low=3e-4, epsilon_high=4e-4, aggregation="token-mean"),
        optim=OptimConfig(learning_rate=1e-3, micro_batches=2, share_prompts=True, schedule="cosine", warmup_steps=2),
    )
    summary = train_mod.train(config, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 8 and summary["rollouts"] == 2
    assert all("kl" in r for r in rows if "loss" in r)
    assert all(r["sampling_tries"] >= 1 for r in rows if "sampling_tries" in r)
    # A rollout's first step trains the parameters its old log-probs were recomputed under (on the
    # update's cut, prompt-sharing micro-batches): the ratio is 1 up to rounding.
    firsts = [r for r in rows if "loss" in r and r["step"] in (1, 5)]
    assert len(firsts) == 2 and all(r["logp_diff_max"] < 1e-4 for r in firsts), firsts


def test_nonfinite_steps_in_a_row_stop_the_run(tmp_path, monkeypatch):
    real = train_mod.train_arrays

    def poisoned(ro, config):
        arrays = real(ro, config)
        arrays["old_logp"] = np.where(arrays["loss_mask"], np.nan, arrays["old_logp"]).astype(np.float32)
        return arrays

    monkeypatch.setattr(train_mod, "train_arrays", poisoned)
    config = tiny_config(steps=10, optim=OptimConfig(learning_rate=1e-3, max_nonfinite_in_a_row=2))
    with pytest.raises(train_mod.NonFiniteError, match="2 steps in a row had a non-finite"):
        train_mod.train(config, tmp_path, progress=False)
    assert not (tmp_path / "final").exists()  # no model written from a failing run
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped_nonfinite"] == 2


def test_the_nonfinite_stop_says_where_finite_weights_are():
    from types import SimpleNamespace

    import jax.numpy as jnp

    config = tiny_config(optim=OptimConfig(max_nonfinite_in_a_row=2))
    state = lambda w: train_mod.TrainState({"w": jnp.asarray([w])}, None, None, step=7, nonfinite_run=2)
    trainer = lambda saved: SimpleNamespace(config=config, checkpointer=SimpleNamespace(steps=lambda: saved))
    with pytest.raises(UserError, match=r"\(step 7, optim.max_nonfinite_in_a_row=2\).*failed steps were skipped"):
        train_mod.check_finite(trainer([5]), state(1.0))
    with pytest.raises(UserError, match=r"no longer finite; the newest checkpoint \(step 5\) holds finite ones"):
        train_mod.check_finite(trainer([5]), state(float("nan")))
    with pytest.raises(UserError, match="no longer finite; no checkpoint was written"):
        train_mod.check_finite(trainer([]), state(float("inf")))
    train_mod.check_finite(trainer([]), dataclasses.replace(state(float("nan")), nonfinite_run=1))  # below the limit


def test_values_that_need_the_model_are_checked_before_the_run_directory_is_written(tmp_path):
    """A value that only the model, its tokenizer or the prompts can refute fails at set-up, before
    config.json is written; and a directory without a checkpoint is not bound to a config."""
    from r1zero.config import CheckpointConfig

    s = dict(num_samples=4, max_new_tokens=1, max_prompt_len=16)
    for change, message in (
            (dict(sampling=SamplingConfig(**{**s, "top_k": 1000})), "sampling.top_k must be at most the vocabulary"),
            (dict(sampling=SamplingConfig(**{**s, "max_prompt_len": 3})), r"sampling.max_prompt_len \(3\) is shorter"),
            (dict(sampling=SamplingConfig(**{**s, "max_new_tokens": 40000})), "max_position_embeddings \\(32768\\)"),
            (dict(sampling=SamplingConfig(**{**s, "eos_ids": (999,)})), "sampling.eos_ids must be token ids below"),
            (dict(checkpoint=CheckpointConfig(best_metric="bogus")), "checkpoint.best_metric must be one of")):
        with pytest.raises(UserError, match=message):
            train_mod.train(tiny_config(**change), tmp_path, progress=False)
        assert not (tmp_path / "config.json").exists()
    (tmp_path / "config.json").write_text(json.dumps(__import__("r1zero.config").config.to_dict(tiny_config(seed=5))))
    summary = train_mod.train(tiny_config(steps=1), tmp_path, progress=False)  # no checkpoint: starts over
    assert summary["steps"] == 1 and json.loads((tmp_path / "config.json").read_text())["seed"] == 0
