"""The GRPO training loop: read top to bottom, one rollout at a time.

    rollout: prompts -> G completions each (sampler) -> rewards -> group-relative advantages
    update:  the rollout split into minibatches, each one optimizer step, `mu` passes

Shape letters: P prompts per rollout, G samples per prompt, B = P * G rows, Lp prompt bucket,
N completion bucket (the longest completion, rounded up to a power of two), T = Lp + N, K micro-batches.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from r1zero import grpo, rewards, sharding
from r1zero.config import TrainConfig, to_dict
from r1zero.data import load_task
from r1zero.metrics import MetricWriter, reflective_rates, split_mean
from r1zero.models import create_model, hf, per_token_logprobs
from r1zero.sampler import Samples, sample
from r1zero.tokenizer import Tokenizer, write_char_tokenizer


class NonFiniteError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------------
# Set-up: model, tokenizer, optimizer, run directory.


# Special tokens of the character tokenizers r1zero writes for models it initialises itself.
SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>", "<think>", "</think>", "<answer>", "</answer>")


def setup_model(config: TrainConfig, workdir: Path, mesh, examples: list[dict]):
    """(model, tokenizer, config): from `model_dir`, or a random `config.model` with a character
    tokenizer of the characters the task's examples use, written into the run directory."""
    if config.model_dir:
        model, model_config = hf.load_model(config.model_dir, mesh)
        tok = Tokenizer(config.model_dir)
        return model, tok, dataclasses.replace(config, model=model_config)
    chars = "".join(sorted({ch for ex in examples for ch in ex["prompt"] + str(ex["answer"])}))
    tok = write_char_tokenizer(workdir / "tokenizer", chars, SPECIAL_TOKENS)
    model_config = dataclasses.replace(config.model, vocab_size=tok.vocab_size)
    model = create_model(model_config, mesh, seed=config.seed)
    return model, tok, dataclasses.replace(config, model=model_config)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    o = config.optim
    decay_steps = max(config.steps - o.warmup_steps, 1)
    if o.schedule == "constant":
        main = optax.constant_schedule(o.learning_rate)
    elif o.schedule == "cosine":
        main = optax.cosine_decay_schedule(o.learning_rate, decay_steps)
    elif o.schedule == "linear":
        main = optax.linear_schedule(o.learning_rate, 0.0, decay_steps)
    else:
        raise ValueError(f"unknown schedule {o.schedule!r}; one of constant, cosine, linear")
    lr = optax.join_schedules([optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps), main],
                              [o.warmup_steps]) if o.warmup_steps else main
    return optax.chain(
        optax.clip_by_global_norm(o.max_grad_norm),
        optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay),
    )


def write_run_files(workdir: Path, config: TrainConfig, tok: Tokenizer) -> None:
    """The run directory describes itself: final config, tokenizer files, model config."""
    (workdir / "config.json").write_text(json.dumps(to_dict(config), indent=1) + "\n")
    src = tok.path.parent
    if src != workdir / "tokenizer":
        (workdir / "tokenizer").mkdir(exist_ok=True)
        for name in hf.TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, workdir / "tokenizer" / name)
    (workdir / "model_config.json").write_text(
        json.dumps(hf.hf_config_dict(config.model, list(tok.eos_ids) or None), indent=1) + "\n")


# ---------------------------------------------------------------------------------------------------
# The jitted functions.


def init_training(model, config: TrainConfig, mesh):
    """(graphdef, params, rest, opt_state, train_step): the model split into trainable parameters
    and the rest, the optimizer state created with the parameters' shardings, the jitted step."""
    tx = make_optimizer(config)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    param_sh = jax.tree.map(lambda x: x.sharding, params)
    repl = sharding.replicated(mesh)
    opt_sh = optax.tree_map_params(tx, lambda _, sh: sh, jax.eval_shape(tx.init, params), param_sh,
                                   transform_non_params=lambda _: repl)
    opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
    return graphdef, params, rest, opt_state, make_train_step(graphdef, rest, config, tx, param_sh, opt_sh, mesh)


def make_train_step(graphdef, rest, config: TrainConfig, tx, param_sh, opt_sh, mesh):
    """jit(params, opt_state, batch) -> (params, opt_state, stats); batch arrays are [K, b, ...].

    Gradients of the loss numerator are summed over the K micro-batches and divided by the global
    denominator, so accumulation equals one big batch. A step whose denominator is zero (nothing to
    learn: every completion masked, or every advantage zero and no KL term) or whose loss or
    gradient is not finite changes neither the parameters nor the optimizer state (no weight decay,
    no moment update): it is skipped and counted.
    """
    g = config.grpo
    temperature = config.sampling.temperature or 1.0

    def loss_fn(params, mb):
        model = nnx.merge(graphdef, params, rest)
        logp, entropy = per_token_logprobs(model, mb["tokens"], mb["mask"], temperature, config.logprob_chunk_tokens)
        num, den, stats = grpo.policy_loss(
            logp, mb["old_logp"], mb["adv"], mb["loss_mask"], epsilon_low=g.epsilon_low,
            epsilon_high=g.epsilon_high, aggregation=g.aggregation, sequence_ratio=g.sequence_ratio,
            max_len=config.sampling.max_new_tokens, beta=g.beta, ref_logp_BxT=mb.get("ref_logp"),
            kl_estimator=g.kl_estimator)
        m = mb["loss_mask"]
        stats["entropy_sum"] = (entropy * m).sum()
        diff = jnp.where(m, jnp.abs(logp - mb["old_logp"]), 0.0)
        stats["logp_diff_sum"], stats["logp_diff_max"] = diff.sum(), diff.max()
        return num, (den, stats)

    def step(params, opt_state, batch):
        def micro(grad_acc, mb):
            (num, (den, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, mb)
            return jax.tree.map(jnp.add, grad_acc, grads), (num, den, stats)

        zeros = jax.tree.map(jnp.zeros_like, params)
        grads, (num, den, stats) = jax.lax.scan(micro, zeros, batch)
        num, den = num.sum(), den.sum()
        grads = jax.tree.map(lambda x: x / jnp.maximum(den, 1e-12), grads)
        loss, grad_norm = num / jnp.maximum(den, 1e-12), optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        has_tokens = batch["loss_mask"].any(-1)
        empty = (den == 0) | (not g.beta and ~jnp.any((batch["adv"] != 0) & has_tokens))
        apply = ~empty & finite
        updates, new_opt = tx.update(grads, opt_state, params)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(apply, n, o), new, old)
        params, opt_state = keep(optax.apply_updates(params, updates), params), keep(new_opt, opt_state)
        tokens = jnp.maximum(stats["tokens"].sum(), 1)
        out = {
            "loss": loss, "grad_norm": grad_norm, "applied": apply, "empty": empty, "nonfinite": ~finite & ~empty,
            "clip_low_frac": (stats["clip_low_frac"] * stats["tokens"]).sum() / tokens,
            "clip_high_frac": (stats["clip_high_frac"] * stats["tokens"]).sum() / tokens,
            "ratio_min": stats["ratio_min"].min(), "ratio_max": stats["ratio_max"].max(),
            "entropy": stats["entropy_sum"].sum() / tokens,
            "logp_diff_mean": stats["logp_diff_sum"].sum() / tokens, "logp_diff_max": stats["logp_diff_max"].max(),
        }
        if g.beta:
            out["kl"] = (stats["kl"] * stats["tokens"]).sum() / tokens
        return params, opt_state, out

    repl = sharding.replicated(mesh)
    return jax.jit(step, in_shardings=(param_sh, opt_sh, repl), out_shardings=(param_sh, opt_sh, repl),
                   donate_argnums=(0, 1))


def make_logprobs_fn(graphdef, rest, config: TrainConfig):
    """jit(params, tokens_BxT, mask_BxT) -> logp_BxT: reference or recomputed old log-probs."""
    temperature = config.sampling.temperature or 1.0

    @jax.jit
    def fn(params, tokens, mask):
        model = nnx.merge(graphdef, params, rest)
        return per_token_logprobs(model, tokens, mask, temperature, config.logprob_chunk_tokens)[0]

    return fn


# ---------------------------------------------------------------------------------------------------
# One rollout: sample, score, advantages.


@dataclasses.dataclass
class Rollout:
    samples: Samples
    examples: list[dict]  # one per row (B)
    scored: rewards.Scored
    correct: np.ndarray  # [B] bool, by the task's accuracy checker
    formatted: np.ndarray  # [B] bool
    adv: np.ndarray  # [B]
    zero_std_frac: float
    tries: int


def score_rollout(samples: Samples, examples: list[dict], config: TrainConfig, context: rewards.Context):
    """(scored, correct_B, formatted_B, rewards_B used for advantages)."""
    weights = dict(zip(config.task.rewards, config.task.reward_weights))
    scored = rewards.score(samples.texts, examples, weights, context)
    acc = scored.parts.get(config.task.accuracy_reward)
    if acc is None:
        acc = rewards.score(samples.texts, examples, {config.task.accuracy_reward: 1.0}, context).parts[config.task.accuracy_reward]
    fmt = scored.parts.get("format")
    if fmt is None:
        fmt = rewards.score(samples.texts, examples, {"format": 1.0}, context).parts["format"]
    total = scored.total.copy()
    if config.grpo.overlong_cache:
        lengths = samples.completion_mask.sum(1)
        total += np.asarray(grpo.overlong_penalty(lengths, config.sampling.max_new_tokens, config.grpo.overlong_cache))
    return scored, np.nan_to_num(acc) >= 1.0, np.nan_to_num(fmt) >= 1.0, total


def collect_rollout(model, tok, batches, key, config: TrainConfig, step: int) -> Rollout:
    """Samples and scores one rollout; with dynamic sampling, groups whose rewards are all equal are
    replaced by groups of fresh prompts (up to max_sampling_tries rounds)."""
    P, G = config.prompts_per_rollout, config.sampling.num_samples
    context = rewards.Context(seed=config.seed, step=step)
    kept: list[tuple] = []
    tries, zero_frac = 0, 0.0
    while True:
        examples = next(batches)
        samples = sample(model, [ex["prompt"] for ex in examples], jax.random.fold_in(key, tries), config.sampling, tok)
        rows = [ex for ex in examples for _ in range(G)]
        scored, correct, formatted, total = score_rollout(samples, rows, config, context)
        zero = np.asarray(grpo.zero_std_groups(total.reshape(P, G), scored.valid.reshape(P, G)))
        if tries == 0:
            zero_frac = float(zero.mean())
        tries += 1
        for p in range(P):
            kept.append((zero[p], samples, p, rows[p * G:(p + 1) * G], scored, correct, formatted, total))
        if not config.grpo.dynamic_sampling:
            break
        if sum(not z for z, *_ in kept) >= P or tries >= config.grpo.max_sampling_tries:
            break
    if config.grpo.dynamic_sampling:  # informative groups first; zero-std groups only as filler
        kept.sort(key=lambda k: bool(k[0]))
    return _assemble(kept[:P], config, zero_frac, tries)


def _assemble(groups, config: TrainConfig, zero_frac: float, tries: int) -> Rollout:
    """Concatenates P groups (possibly from different sampling rounds) into one rollout."""
    G = config.sampling.num_samples
    rows = lambda a, p: a[p * G:(p + 1) * G]
    Lp = max(g[1].prompt_tokens.shape[1] for g in groups)

    def cat(field):
        parts = [rows(getattr(s, field), p) for _, s, p, *_ in groups]
        if field.startswith("prompt"):  # left-pad prompts of different buckets to the longest
            parts = [np.pad(x, ((0, 0), (Lp - x.shape[1], 0))) for x in parts]
        return np.concatenate(parts)

    samples = Samples(
        prompt_tokens=cat("prompt_tokens"), prompt_mask=cat("prompt_mask"),
        completion_tokens=cat("completion_tokens"), completion_mask=cat("completion_mask"),
        logprobs=cat("logprobs"), finish_reason=sum((rows(s.finish_reason, p) for _, s, p, *_ in groups), []),
        group_ids=np.repeat(np.arange(len(groups)), G), texts=sum((rows(s.texts, p) for _, s, p, *_ in groups), []),
        decode_steps=max(s.decode_steps for _, s, *_ in groups),
        num_truncated_prompts=sum(s.num_truncated_prompts for _, s, *_ in groups),
    )
    examples = sum((g[3] for g in groups), [])
    pick = lambda i: np.concatenate([rows(g[i], g[2]) for g in groups])
    scored = rewards.Scored(
        total=pick(7), valid=np.concatenate([rows(g[4].valid, g[2]) for g in groups]),
        parts={k: np.concatenate([rows(g[4].parts[k], g[2]) for g in groups]) for k in groups[0][4].parts},
        reasons=sum((rows(g[4].reasons, g[2]) for g in groups), []),
    )
    P = len(groups)
    adv = np.asarray(grpo.advantages(scored.total.reshape(P, G), scored.valid.reshape(P, G),
                                     config.grpo.advantage, config.grpo.std_eps, config.grpo.std_ddof)).reshape(-1)
    return Rollout(samples, examples, scored, pick(5), pick(6), adv, zero_frac, tries)


# ---------------------------------------------------------------------------------------------------
# From a rollout to train batches.


def completion_bucket(longest: int, max_new_tokens: int) -> int:
    """Train batches are trimmed to the longest completion, rounded up to a power of two (few compiles)."""
    n = 8
    while n < longest:
        n *= 2
    return min(n, max_new_tokens)


def train_arrays(ro: Rollout, config: TrainConfig) -> dict[str, np.ndarray]:
    """[B, T] arrays for the loss: prompt + trimmed completion, and which tokens are trained on."""
    s = ro.samples
    N = completion_bucket(int(s.completion_mask.sum(1).max()), s.completion_tokens.shape[1])
    Lp = s.prompt_tokens.shape[1]
    loss_mask = s.completion_mask[:, :N] & ro.scored.valid[:, None]
    if config.grpo.mask_truncated:
        loss_mask &= (np.asarray(s.finish_reason) != "length")[:, None]
    zeros = np.zeros((len(s.texts), Lp), np.float32)
    return {
        "tokens": np.concatenate([s.prompt_tokens, s.completion_tokens[:, :N]], 1).astype(np.int32),
        "mask": np.concatenate([s.prompt_mask, s.completion_mask[:, :N]], 1),
        "loss_mask": np.concatenate([np.zeros_like(s.prompt_mask), loss_mask], 1),
        "old_logp": np.concatenate([zeros, s.logprobs[:, :N]], 1),
        "adv": ro.adv.astype(np.float32),
    }


def minibatches(arrays: dict[str, np.ndarray], config: TrainConfig, rng: np.random.Generator):
    """Yields num_minibatches dicts of [K, b, ...] arrays, whole groups each, in a shuffled order."""
    G, M, K = config.sampling.num_samples, config.num_minibatches, config.optim.micro_batches
    P = len(arrays["adv"]) // G
    groups = rng.permutation(P).reshape(M, P // M)
    for chosen in groups:
        idx = (chosen[:, None] * G + np.arange(G)).reshape(-1)
        if len(idx) % K:
            raise ValueError(f"minibatch of {len(idx)} rows does not split into {K} micro-batches")
        yield {k: v[idx].reshape(K, len(idx) // K, *v.shape[1:]) for k, v in arrays.items()}


# ---------------------------------------------------------------------------------------------------
# Evaluation on the held-out split.


def evaluate(model, tok, examples: list[dict], config: TrainConfig, key) -> dict[str, float]:
    """Greedy and sampled accuracy (task.accuracy_reward), format rate and mean length."""
    out = {}
    for name, temperature in (("greedy", 0.0), ("sampled", config.sampling.temperature)):
        scfg = dataclasses.replace(config.sampling, num_samples=1, temperature=temperature)
        s = sample(model, [ex["prompt"] for ex in examples], key, scfg, tok)
        parts = rewards.score(s.texts, examples, {config.task.accuracy_reward: 1.0, "format": 0.0}).parts
        out[f"eval/{name}_accuracy"] = float(np.nanmean(parts[config.task.accuracy_reward] >= 1.0))
        out[f"eval/{name}_format"] = float(np.nanmean(parts["format"]))
        out[f"eval/{name}_length"] = float(s.completion_mask.sum(1).mean())
    return out


def rollout_metrics(ro: Rollout, seconds: float) -> dict[str, float]:
    s = ro.samples
    lengths = s.completion_mask.sum(1)
    len_ok, len_bad = split_mean(lengths, ro.correct)
    m = {
        "reward/mean": float(ro.scored.total.mean()), "reward/std": float(ro.scored.total.std()),
        "accuracy": float(ro.correct.mean()), "format_rate": float(ro.formatted.mean()),
        "zero_adv_group_frac": ro.zero_std_frac, "could_not_score": int((~ro.scored.valid).sum()),
        "length/mean": float(lengths.mean()), "length/max": int(lengths.max()),
        "length/correct": len_ok, "length/incorrect": len_bad,
        "truncated_frac": float(np.mean(np.asarray(s.finish_reason) == "length")),
        "rollout_seconds": seconds, "rollout_tokens_per_s": float(lengths.sum() / max(seconds, 1e-9)),
        "sampling_tries": ro.tries,
    }
    m.update({f"reward/{k}": float(np.nanmean(v)) for k, v in ro.scored.parts.items()})
    texts = np.asarray(s.texts, dtype=object)
    m.update(reflective_rates(list(texts[ro.correct]), "reflect_correct"))
    m.update(reflective_rates(list(texts[~ro.correct]), "reflect_incorrect"))
    return m


# ---------------------------------------------------------------------------------------------------
# The loop.


def train(config: TrainConfig, workdir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Runs `config.steps` optimizer steps of GRPO; returns the summary (start vs end evaluation)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh(config.mesh)
    batches, test_examples = load_task(config.task, config.seed, workdir / "data", config.prompts_per_rollout,
                                       tokenizer_dir=config.model_dir or None)
    examples = test_examples if config.model_dir else batches.examples() + test_examples
    model, tok, config = setup_model(config, workdir, mesh, examples)
    write_run_files(workdir, config, tok)

    graphdef, params, rest, opt_state, train_step = init_training(model, config, mesh)
    logprobs_fn = make_logprobs_fn(graphdef, rest, config)
    ref_params = jax.tree.map(jnp.copy, params) if config.grpo.beta else None  # frozen base

    key = jax.random.key(config.seed)
    eval_key = jax.random.fold_in(key, 1)
    writer = MetricWriter(workdir)
    current = lambda: nnx.merge(graphdef, params, rest)
    start_eval = evaluate(current(), tok, test_examples, config, eval_key)  # "epoch 0": the base as it is
    writer.write(0, start_eval)
    end_eval, counters = start_eval, {"skipped_empty": 0, "skipped_nonfinite": 0}
    bar = _progress(config.steps, progress)
    step, rollout_index, nonfinite_run = 0, 0, 0
    rng = np.random.default_rng(config.seed)
    while step < config.steps:
        t0 = time.perf_counter()
        ro = collect_rollout(current(), tok, batches, jax.random.fold_in(key, 2 + rollout_index), config, step)
        rollout_seconds = time.perf_counter() - t0
        arrays = train_arrays(ro, config)
        if config.grpo.recompute_old_logprobs:
            arrays["old_logp"] = np.asarray(logprobs_fn(params, arrays["tokens"], arrays["mask"]))
        if ref_params is not None:
            arrays["ref_logp"] = np.asarray(logprobs_fn(ref_params, arrays["tokens"], arrays["mask"]))
        metrics_r = rollout_metrics(ro, rollout_seconds)
        writer.write_completions(step, _completion_rows(ro, config.log_completions))
        t1 = time.perf_counter()
        rows = []
        for _ in range(config.mu):
            for mb in minibatches(arrays, config, rng):
                if step >= config.steps:
                    break
                params, opt_state, stats = train_step(params, opt_state, mb)
                stats = jax.device_get(stats)
                step += 1
                counters["skipped_empty"] += int(stats["empty"])
                counters["skipped_nonfinite"] += int(stats["nonfinite"])
                nonfinite_run = nonfinite_run + 1 if stats["nonfinite"] else 0
                rows.append((step, {"rollout": rollout_index, **stats, **counters}))
                if ref_params is not None and config.grpo.ref_reset_every and step % config.grpo.ref_reset_every == 0:
                    ref_params = jax.tree.map(jnp.copy, params)  # R1: reset the reference to the policy
                if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
                    end_eval = evaluate(current(), tok, test_examples, config, eval_key)
                    rows[-1][1].update(end_eval)
                if nonfinite_run >= config.optim.max_nonfinite_in_a_row:
                    _write_rows(writer, rows, metrics_r)
                    writer.close()
                    raise NonFiniteError(
                        f"{nonfinite_run} steps in a row had a non-finite loss or gradient (step {step}); "
                        f"stopping. The parameters are those of the last finite update.")
                bar.update(1)
                bar.set_postfix(reward=f"{metrics_r['reward/mean']:.2f}", acc=f"{metrics_r['accuracy']:.2f}",
                                len=f"{metrics_r['length/mean']:.1f}", tok_s=f"{metrics_r['rollout_tokens_per_s']:.0f}")
        metrics_r["update_seconds"] = time.perf_counter() - t1
        _write_rows(writer, rows, metrics_r)
        rollout_index += 1
    bar.close()
    writer.close()
    hf.save_model(current(), workdir / "final", tokenizer_dir=tok.path.parent)
    summary = {"start": start_eval, "end": end_eval, "steps": step, "rollouts": rollout_index, **counters}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _write_rows(writer: MetricWriter, rows: list[tuple[int, dict]], rollout: dict) -> None:
    """One row per step; the rollout's own metrics ride on its last step's row."""
    for i, (step, row) in enumerate(rows):
        writer.write(step, {**row, **rollout} if i == len(rows) - 1 else row)


def _completion_rows(ro: Rollout, n: int) -> list[dict]:
    rows = []
    for i in range(min(n, len(ro.samples.texts))):
        rows.append({"prompt": ro.examples[i]["prompt"], "answer": ro.examples[i].get("answer"),
                     "completion": ro.samples.texts[i], "finish": ro.samples.finish_reason[i],
                     "reward": float(ro.scored.total[i]), "advantage": float(ro.adv[i]),
                     "correct": bool(ro.correct[i]),
                     **{f"reward/{k}": float(v[i]) for k, v in ro.scored.parts.items()}})
    return rows


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="grpo", unit="step", disable=not enabled, dynamic_ncols=True)


def format_summary(summary: dict[str, Any]) -> str:
    """A start-vs-end table of the held-out evaluation."""
    lines = [f"{'held-out':<28}{'start':>10}{'end':>10}"]
    for k in summary["start"]:
        lines.append(f"{k.removeprefix('eval/'):<28}{summary['start'][k]:>10.3f}{summary['end'][k]:>10.3f}")
    lines.append(f"steps {summary['steps']}, rollouts {summary['rollouts']}, skipped (empty) "
                 f"{summary['skipped_empty']}, skipped (non-finite) {summary['skipped_nonfinite']}")
    return "\n".join(lines)
