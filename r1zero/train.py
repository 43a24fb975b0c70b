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
from r1zero.checkpoint import Checkpointer
from r1zero.config import TrainConfig, to_dict
from r1zero.data import load_task
from r1zero.metrics import MetricWriter, reflective_rates, text_stats
from r1zero.models import create_model, hf, per_token_logprobs
from r1zero.sampler import Samples, sample
from r1zero.optim import make_optimizer
from r1zero.tokenizer import SPECIAL_TOKENS, Tokenizer, write_char_tokenizer


class NonFiniteError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------------
# Set-up: model, tokenizer, optimizer, run directory.


def setup_model(config: TrainConfig, workdir: Path, mesh, examples: list[dict]):
    """(model, tokenizer, config): from `model_dir`, or a random `config.model` with a character
    tokenizer of the characters the task's examples use, written into the run directory."""
    if config.model_dir:
        model, model_config = hf.load_model(config.model_dir, mesh)
        tok = Tokenizer(config.model_dir)
        return model, tok, dataclasses.replace(config, model=model_config)
    chars = "".join(sorted({ch for ex in examples for ch in ex["prompt"] + str(ex["answer"])}))
    where = workdir / "tokenizer"
    if jax.process_index() != 0:  # the same characters everywhere; only the first host writes the run directory
        import tempfile

        where = Path(tempfile.mkdtemp(prefix="r1zero-tokenizer-"))
    tok = write_char_tokenizer(where, chars, SPECIAL_TOKENS)
    model_config = dataclasses.replace(config.model, vocab_size=tok.vocab_size)
    model = create_model(model_config, mesh, seed=config.seed)
    return model, tok, dataclasses.replace(config, model=model_config)


def write_run_files(workdir: Path, requested: TrainConfig, config: TrainConfig, tok: Tokenizer) -> None:
    """The run directory describes itself: the config as given (what a resume reads), the tokenizer
    files, and the model config the run derived (e.g. the vocabulary of its tokenizer)."""
    (workdir / "config.json").write_text(json.dumps(to_dict(requested), indent=1) + "\n")
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
    tx = make_optimizer(config.optim, config.steps)
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

    # Parameters and optimizer state arrive committed to their shardings and leave with the same
    # ones (donated, updated in place); the batch arrives split over (data, fsdp) by `shard_batch`.
    return jax.jit(step, out_shardings=(param_sh, opt_sh, sharding.replicated(mesh)), donate_argnums=(0, 1))


def shard_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Global [K, b, ...] arrays from this process's rows (on several hosts each passes its own
    rows): split over (data, fsdp) when the rows divide, else replicated (one process only)."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    rows = next(iter(batch.values())).shape[1] * jax.process_count()
    split = rows % (mesh.shape["data"] * mesh.shape["fsdp"]) == 0
    if not split and jax.process_count() > 1:
        raise ValueError(f"{rows} rows per minibatch do not split over data x fsdp of the mesh {dict(mesh.shape)}")
    spec = lambda ndim: P(None, sharding.RULES["batch"] if split else None, *[None] * (ndim - 2))
    return {k: jax.make_array_from_process_local_data(NamedSharding(mesh, spec(v.ndim)), v) for k, v in batch.items()}


def make_logprobs_fn(graphdef, rest, config: TrainConfig, mesh):
    """fn(params, tokens_BxT, mask_BxT) -> logp_BxT (numpy, this process's rows): reference or
    recomputed old log-probs."""
    temperature = config.sampling.temperature or 1.0

    @jax.jit
    def fn(params, tokens, mask):
        model = nnx.merge(graphdef, params, rest)
        return per_token_logprobs(model, tokens, mask, temperature, config.logprob_chunk_tokens)[0]

    def host(params, tokens, mask):
        if jax.process_count() == 1:
            return np.asarray(fn(params, tokens, mask))
        from jax.experimental import multihost_utils
        from jax.sharding import PartitionSpec as P

        spec = P(sharding.RULES["batch"])
        out = fn(params, *multihost_utils.host_local_array_to_global_array((tokens, mask), mesh, spec))
        return np.asarray(multihost_utils.global_array_to_host_local_array(
            jax.device_put(out, jax.sharding.NamedSharding(mesh, spec)), mesh, spec))

    return host


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


@dataclasses.dataclass
class _Round:
    """One sampling round: P prompts x G samples, scored. `zero_P`: groups with equal rewards."""

    samples: Samples
    examples: list[dict]  # per row
    scored: rewards.Scored
    correct: np.ndarray
    formatted: np.ndarray
    total: np.ndarray  # rewards used for advantages (with the overlong penalty)
    zero_P: np.ndarray


def collect_rollout(model, tok, batches, key, config: TrainConfig, step: int, mesh=None) -> Rollout:
    """Samples and scores one rollout; with dynamic sampling, groups whose rewards are all equal are
    replaced by groups of fresh prompts (up to max_sampling_tries rounds)."""
    P, G = config.prompts_per_rollout, config.sampling.num_samples
    context = rewards.Context(seed=config.seed, step=step)
    rounds: list[_Round] = []
    while True:
        examples = next(batches)
        samples = sample(model, [ex["prompt"] for ex in examples], jax.random.fold_in(key, len(rounds)),
                         config.sampling, tok, mesh)
        rows = [ex for ex in examples for _ in range(G)]
        scored, correct, formatted, total = score_rollout(samples, rows, config, context)
        zero = np.asarray(grpo.zero_std_groups(total.reshape(P, G), scored.valid.reshape(P, G)))
        rounds.append(_Round(samples, rows, scored, correct, formatted, total, zero))
        informative = sum(int((~r.zero_P).sum()) for r in rounds)
        if not config.grpo.dynamic_sampling or informative >= P or len(rounds) >= config.grpo.max_sampling_tries:
            break
    groups = [(r, p) for r in range(len(rounds)) for p in range(P)]
    if config.grpo.dynamic_sampling:  # informative groups first; zero-std groups only as filler
        groups.sort(key=lambda rp: bool(rounds[rp[0]].zero_P[rp[1]]))
    return _assemble(rounds, groups[:P], config)


def _assemble(rounds: list[_Round], groups: list[tuple[int, int]], config: TrainConfig) -> Rollout:
    """One rollout of the chosen (round, group) pairs, in order; prompts of different buckets are
    left-padded to the longest."""
    G = config.sampling.num_samples
    Lp = max(rounds[r].samples.prompt_tokens.shape[1] for r, _ in groups)

    def take(get, left_pad=False):
        parts = [get(rounds[r])[p * G:(p + 1) * G] for r, p in groups]
        if left_pad:
            parts = [np.pad(x, ((0, 0), (Lp - x.shape[1], 0))) for x in parts]
        return sum(parts, []) if isinstance(parts[0], list) else np.concatenate(parts)

    field = lambda name, **kw: take(lambda rd: getattr(rd.samples, name), **kw)
    used = [rounds[r] for r in sorted({r for r, _ in groups})]
    samples = Samples(
        prompt_tokens=field("prompt_tokens", left_pad=True), prompt_mask=field("prompt_mask", left_pad=True),
        completion_tokens=field("completion_tokens"), completion_mask=field("completion_mask"),
        logprobs=field("logprobs"), finish_reason=field("finish_reason"), texts=field("texts"),
        group_ids=np.repeat(np.arange(len(groups)), G),
        decode_steps=max(rd.samples.decode_steps for rd in used),
        num_truncated_prompts=sum(rd.samples.num_truncated_prompts for rd in used),
    )
    scored = rewards.Scored(
        total=take(lambda rd: rd.total), valid=take(lambda rd: rd.scored.valid),
        parts={k: take(lambda rd, k=k: rd.scored.parts[k]) for k in rounds[0].scored.parts},
        reasons=take(lambda rd: rd.scored.reasons),
    )
    P = len(groups)
    adv = np.asarray(grpo.advantages(scored.total.reshape(P, G), scored.valid.reshape(P, G),
                                     config.grpo.advantage, config.grpo.std_eps, config.grpo.std_ddof)).reshape(-1)
    return Rollout(samples, take(lambda rd: rd.examples), scored, take(lambda rd: rd.correct),
                   take(lambda rd: rd.formatted), adv, float(rounds[0].zero_P.mean()), len(rounds))


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


def evaluate(model, tok, examples: list[dict], config: TrainConfig, key, mesh=None) -> tuple[dict[str, float], list[dict]]:
    """(metrics, rows) on the held-out examples, decoded greedily and sampled once each at the
    training temperature: `text_stats` of both (eval/greedy_accuracy, eval/sampled_step_by_step, ...)
    and one row per example with both completions (for per-prompt learning curves). On several hosts
    each takes an equal share, the means are combined and the rows are this host's."""
    n = jax.process_count()
    if n > 1:
        examples = examples[: len(examples) // n * n][jax.process_index()::n]
    out, rows = {}, [{"id": ex.get("id", str(i)), "answer": ex.get("answer")} for i, ex in enumerate(examples)]
    for name, temperature in (("greedy", 0.0), ("sampled", config.sampling.temperature)):
        scfg = dataclasses.replace(config.sampling, num_samples=1, temperature=temperature)
        s = sample(model, [ex["prompt"] for ex in examples], key, scfg, tok, mesh)
        parts = rewards.score(s.texts, examples, {config.task.accuracy_reward: 1.0, "format": 0.0}).parts
        correct = np.nan_to_num(parts[config.task.accuracy_reward]) >= 1.0
        out.update(text_stats(s.texts, s.completion_mask.sum(1), correct, np.nan_to_num(parts["format"]) >= 1.0,
                              prefix=f"eval/{name}_"))
        for row, text, ok in zip(rows, s.texts, correct):
            row[name], row[f"{name}_correct"] = text, bool(ok)
    if n > 1:
        from jax.experimental import multihost_utils

        means = multihost_utils.process_allgather(np.asarray(list(out.values()))).mean(0)
        out = dict(zip(out, map(float, means)))
    return out, rows


def rollout_metrics(ro: Rollout, seconds: float) -> dict[str, float]:
    s = ro.samples
    lengths = s.completion_mask.sum(1)
    m = {
        "reward/mean": float(ro.scored.total.mean()), "reward/std": float(ro.scored.total.std()),
        **text_stats(s.texts, lengths, ro.correct, ro.formatted),
        "zero_adv_group_frac": ro.zero_std_frac, "could_not_score": int((~ro.scored.valid).sum()),
        "length_max": int(lengths.max()),
        "truncated_frac": float(np.mean(np.asarray(s.finish_reason) == "length")),
        "rollout_seconds": seconds, "rollout_tokens_per_s": float(lengths.sum() / max(seconds, 1e-9)),
        "sampling_tries": ro.tries,
    }
    m.update({f"reward/{k}": float(np.nanmean(v)) for k, v in ro.scored.parts.items()})
    m.update(reflective_rates(list(s.texts), "reflect"))  # each word, for first-appearance curves
    return m


# ---------------------------------------------------------------------------------------------------
# The loop.


@dataclasses.dataclass
class Progress:
    """Host-side bookkeeping saved with every checkpoint. `cursor`: steps done in the current rollout."""

    step: int = 0
    rollout: int = 0
    cursor: int = 0
    nonfinite_run: int = 0
    counters: dict = dataclasses.field(default_factory=lambda: {"skipped_empty": 0, "skipped_nonfinite": 0})
    start_eval: dict = dataclasses.field(default_factory=dict)
    end_eval: dict = dataclasses.field(default_factory=dict)


def train(config: TrainConfig, workdir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Runs GRPO until `config.steps` optimizer steps; continues from the newest usable checkpoint in
    `workdir` if there is one. SIGTERM/SIGINT save the current step and return early. Returns the
    summary (held-out evaluation before RL and at the end)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    requested = config
    mesh = sharding.make_mesh(config.mesh)
    batches, test_examples = load_task(config.task, config.seed, workdir / "data", config.prompts_per_rollout,
                                       tokenizer_dir=config.model_dir or None)
    examples = test_examples if config.model_dir else batches.examples() + test_examples
    model, tok, config = setup_model(config, workdir, mesh, examples)
    main_process = jax.process_index() == 0
    if main_process:
        write_run_files(workdir, requested, config, tok)

    graphdef, params, rest, opt_state, train_step = init_training(model, config, mesh)
    logprobs_fn = make_logprobs_fn(graphdef, rest, config, mesh)
    ref_params, ref_is_base = (jax.tree.map(jnp.copy, params), True) if config.grpo.beta else (None, True)
    ckpt = Checkpointer(workdir / "checkpoints", config.checkpoint.keep, config.checkpoint.best_metric,
                        config.checkpoint.best_mode) if config.checkpoint.every else None
    p, arrays, resumed_from = Progress(), None, None
    if ckpt is not None and ckpt.steps():
        abstract = {"params": _abstract(params), "opt_state": _abstract(opt_state), "ref_params": _abstract(params)}
        step, state, saved_arrays, meta = ckpt.restore_latest(abstract)
        params, opt_state = state["params"], state["opt_state"]
        ref_is_base = meta["ref_is_base"]
        if not ref_is_base:
            ref_params = state["ref_params"]
        p = Progress(**meta["progress"])
        batches.set_state(meta["data"])
        arrays = saved_arrays if p.cursor else None
        resumed_from = step
        truncate_logs(workdir, step)
    else:
        truncate_logs(workdir, -1)  # no usable checkpoint: the run starts over, so do its logs

    key = jax.random.key(config.seed)
    eval_key = jax.random.fold_in(key, 1)
    current = lambda: nnx.merge(graphdef, params, rest)
    writer = MetricWriter(workdir, enabled=main_process)
    if resumed_from is None:  # the epoch-0 audit: how the base behaves under the template, before any RL
        p.start_eval, eval_rows = evaluate(current(), tok, test_examples, config, eval_key, mesh)
        p.end_eval = p.start_eval
        writer.write(0, p.start_eval)
        writer.write_eval(0, eval_rows)
        if main_process:
            write_audit(workdir, p.start_eval, eval_rows)
    stop = _StopRequest()
    bar = _progress(config.steps, progress, initial=p.step)
    first_row: dict = {}
    try:
        while p.step < config.steps and not stop.requested:
            if arrays is None:  # a new rollout: sample, score, advantages
                t0 = time.perf_counter()
                ro = collect_rollout(current(), tok, batches, jax.random.fold_in(key, 2 + p.rollout), config, p.step, mesh)
                arrays = train_arrays(ro, config)
                if config.grpo.recompute_old_logprobs:
                    arrays["old_logp"] = logprobs_fn(params, arrays["tokens"], arrays["mask"])
                if ref_params is not None:
                    arrays["ref_logp"] = logprobs_fn(ref_params, arrays["tokens"], arrays["mask"])
                first_row = {"rollout": p.rollout, **rollout_metrics(ro, time.perf_counter() - t0)}
                writer.write_completions(p.step + 1, _completion_rows(ro, config.log_completions))
                _test_hook("rollout", p.step + 1, ckpt)
            schedule = rollout_minibatches(arrays, config, p.rollout)
            for mb in schedule[p.cursor:]:
                if p.step >= config.steps or stop.requested:
                    break
                t1 = time.perf_counter()
                params, opt_state, stats = train_step(params, opt_state, shard_batch(mb, mesh))
                stats = jax.device_get(stats)
                p.step, p.cursor = p.step + 1, p.cursor + 1
                p.counters["skipped_empty"] += int(stats["empty"])
                p.counters["skipped_nonfinite"] += int(stats["nonfinite"])
                p.nonfinite_run = p.nonfinite_run + 1 if stats["nonfinite"] else 0
                _test_hook("update", p.step, ckpt)
                row = {"rollout": p.rollout, **first_row, **{k: v.item() for k, v in stats.items()}, **p.counters,
                       "step_seconds": time.perf_counter() - t1}
                first_row = {}
                if ref_params is not None and config.grpo.ref_reset_every and p.step % config.grpo.ref_reset_every == 0:
                    ref_params, ref_is_base = jax.tree.map(jnp.copy, params), False  # R1: reference := policy
                if (config.eval_every and p.step % config.eval_every == 0) or p.step == config.steps:
                    p.end_eval, eval_rows = evaluate(current(), tok, test_examples, config, eval_key, mesh)
                    row.update(p.end_eval)
                    writer.write_eval(p.step, eval_rows)
                writer.write(p.step, row)
                if p.nonfinite_run >= config.optim.max_nonfinite_in_a_row:
                    raise NonFiniteError(
                        f"{p.nonfinite_run} steps in a row had a non-finite loss or gradient (step {p.step}); "
                        f"stopping. The parameters are those of the last finite update"
                        + (", and the newest checkpoint holds finite weights." if ckpt else "."))
                if p.cursor == len(schedule):  # the rollout is used up
                    p.cursor, p.rollout = 0, p.rollout + 1
                    arrays = None
                _test_hook("sigterm", p.step)
                if ckpt is not None and (p.step % config.checkpoint.every == 0 or p.step == config.steps or stop.requested):
                    state = {"params": params, "opt_state": opt_state}
                    if not ref_is_base:
                        state["ref_params"] = ref_params
                    meta = {"progress": dataclasses.asdict(p), "data": batches.get_state(), "ref_is_base": ref_is_base,
                            "config": to_dict(requested), "versions": _versions()}
                    ckpt.save(p.step, state, arrays if arrays is not None else {"none": np.zeros(1)}, meta)
                    _test_hook("save", p.step)
                bar.update(1)
                if "reward/mean" in row:  # the rollout's numbers, shown until the next rollout
                    bar.set_postfix(reward=f"{row['reward/mean']:.2f}", acc=f"{row['accuracy']:.2f}",
                                    len=f"{row['length']:.1f}", tok_s=f"{row['rollout_tokens_per_s']:.0f}")
    finally:
        stop.restore()
        bar.close()
        writer.close()
        if ckpt is not None:
            ckpt.close()
    if not stop.requested:
        hf.save_model(current(), workdir / "final", tokenizer_dir=tok.path.parent)
    summary = {"start": p.start_eval, "end": p.end_eval, "steps": p.step, "rollouts": p.rollout,
               "resumed_from": resumed_from, "preempted": stop.requested, **p.counters}
    if main_process:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def export_run(workdir: str | Path, out: str | Path, step: int | None = None) -> Path:
    """Writes the parameters of checkpoint `step` (default: the newest usable) of a run as a Hugging
    Face directory with the run's tokenizer."""
    from r1zero.config import from_dict

    workdir = Path(workdir)
    if not (workdir / "config.json").is_file():
        raise FileNotFoundError(f"{workdir} is not a run directory (no config.json)")
    config = from_dict(TrainConfig, json.loads((workdir / "config.json").read_text()))
    mesh = sharding.make_mesh(config.mesh)
    tok = Tokenizer(workdir / "tokenizer")
    if config.model_dir:
        model, _ = hf.load_model(config.model_dir, mesh)
    else:
        model = create_model(dataclasses.replace(config.model, vocab_size=tok.vocab_size), mesh, seed=config.seed)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ckpt = Checkpointer(workdir / "checkpoints")
    steps = ckpt.steps()
    if not steps:
        raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint")
    if step is not None and step not in steps:
        raise ValueError(f"no checkpoint at step {step} in {workdir}/checkpoints (steps: {steps})")
    params = ckpt.restore_params(step if step is not None else steps[-1], _abstract(params))
    ckpt.close()
    return hf.save_model(nnx.merge(graphdef, params, rest), out, tokenizer_dir=workdir / "tokenizer")


def rollout_minibatches(arrays: dict[str, np.ndarray], config: TrainConfig, rollout: int) -> list[dict]:
    """Every step of a rollout in order (`mu` passes, each a fresh shuffle); the order depends only on
    (seed, rollout), so a run resumed in the middle of a rollout continues with the same minibatches."""
    return [mb for k in range(config.mu)
            for mb in minibatches(arrays, config, np.random.default_rng([config.seed, rollout, k]))]


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def truncate_logs(workdir: Path, step: int) -> None:
    """Cuts metrics.jsonl, completions.jsonl and eval_completions.jsonl back to rows of steps <= `step`, so that no step
    appears twice after a resume. Only the first host writes logs."""
    if jax.process_index() != 0:
        return
    for name in ("metrics.jsonl", "completions.jsonl", "eval_completions.jsonl"):
        path = workdir / name
        if path.is_file():
            keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in keep))
            tmp.replace(path)


class _StopRequest:
    """SIGTERM/SIGINT set `requested`; the loop then saves the current step and returns."""

    def __init__(self):
        import signal
        import threading

        self.requested, self._old = False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _test_hook(phase: str, step: int, ckpt: Checkpointer | None = None) -> None:
    """Deterministic crash points for the resume tests: R1ZERO_TEST_KILL=phase:step SIGKILLs the
    process there (phase `sigterm` sends SIGTERM instead). For `rollout` and `update` the previous
    asynchronous save is let finish first, so which checkpoint survives does not depend on timing;
    `save` kills right after a save started, before it commits."""
    import os
    import signal

    if os.environ.get("R1ZERO_TEST_KILL") == f"{phase}:{step}":
        if ckpt is not None and phase in ("rollout", "update"):
            ckpt.wait()
        os.kill(os.getpid(), signal.SIGTERM if phase == "sigterm" else signal.SIGKILL)


def _versions() -> dict[str, str]:
    import flax
    import orbax.checkpoint

    from r1zero import __version__

    return {"r1zero": __version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "orbax": orbax.checkpoint.__version__}


def _completion_rows(ro: Rollout, n: int) -> list[dict]:
    rows = []
    for i in range(min(n, len(ro.samples.texts))):
        rows.append({"prompt": ro.examples[i]["prompt"], "answer": ro.examples[i].get("answer"),
                     "completion": ro.samples.texts[i], "finish": ro.samples.finish_reason[i],
                     "reward": float(ro.scored.total[i]), "advantage": float(ro.adv[i]),
                     "correct": bool(ro.correct[i]),
                     **{f"reward/{k}": float(v[i]) for k, v in ro.scored.parts.items()}})
    return rows


def _progress(total: int, enabled: bool, initial: int = 0):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="grpo", unit="step", disable=not enabled, dynamic_ncols=True)


def write_audit(workdir: Path, metrics: dict[str, float], rows: list[dict], examples: int = 8) -> None:
    """audit_epoch0.json: the base model under the template before RL (the step-0 evaluation) with
    some of its completions, so pre-existing behaviour is never mistaken for emergence."""
    audit = {"note": "held-out evaluation of the base model before any RL update (step 0)",
             "metrics": metrics, "examples": rows[:examples]}
    (workdir / "audit_epoch0.json").write_text(json.dumps(audit, indent=1) + "\n")
