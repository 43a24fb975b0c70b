"""GRPO training: the train state, a trainer with two halves (rollout, update), and the loop.

    state, batch = trainer.start()                    # fresh, or the newest usable checkpoint
    while state.step < config.steps:
        batch = batch or trainer.rollout(state)       # prompts -> samples -> rewards -> advantages
        state, stats = trainer.update(state, batch)   # one minibatch: one optimizer step
        callbacks                                     # evaluation, metrics, checkpoint, progress bar

A rollout of P prompts x G samples is cut into M minibatches and passed over `mu` times: it feeds
M * mu steps, then the loop samples the next one.

Random streams, one table (so that adding a stream never shifts another): every JAX key of a run is
fold_in(key(seed), offset), with the offsets in STREAMS; rollout r takes 2 + r, and round j of its
dynamic sampling folds in j again. Besides those: minibatch orders draw from numpy
default_rng([seed, rollout, pass]), prompts from grain's shuffle(seed), the random-reward control
from (seed, step), and a random model's init from nnx.Rngs(seed).

Shape letters (as in rollout.py): P prompts per rollout, G samples per prompt, B = P * G rows, Lp
prompt bucket, N completion bucket, T = Lp + N tokens per row, M minibatches per pass over a
rollout, K micro-batches per minibatch, R rows per micro-batch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from r1zero import grpo, rewards, sharding
from r1zero.checkpoint import Checkpointer, all_finite
from r1zero.config import EvalConfig, TrainConfig, from_dict, to_dict
from r1zero.data import check_task, load_task
from r1zero.errors import MissingFileError, UserError, read_json
from r1zero.evaluate import evaluate, metric_names
from r1zero.metrics import MetricWriter
from r1zero.models import Decoder, SharedPrefix, create_model, hf, hub, logprob_pass, per_token_logprobs
from r1zero.optim import init_opt_state, make_optimizer
from r1zero.rollout import collect_rollout, completion_rows, minibatches, rollout_metrics, step_rows, train_arrays
from r1zero.sharding import constrain_rows, micro_batch_to_global, rows_to_local
from r1zero.tokenizer import SPECIAL_TOKENS, Tokenizer, write_char_tokenizer

# Offsets of the named random streams. Rollout r takes 2 + r (every offset from 2 up), so the one
# offset left for a new stream is 0 (or, with a changed table, a stream that folds in its own index).
STREAMS = {"eval": 1, "rollout": 2}


def stream_key(seed: int, stream: str, index: int = 0) -> jax.Array:
    """The key of random stream `stream` (number `index` of it) of the run with `seed`."""
    return jax.random.fold_in(jax.random.key(seed), STREAMS[stream] + index)


class NonFiniteError(UserError):
    """Too many steps in a row had a non-finite loss or gradient: the run's settings (usually the
    learning rate) make it diverge. Reported like a user error, without a traceback."""


# ---------------------------------------------------------------------------------------------------
# The state and the two halves of a step.


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything that changes as a run trains: one pytree, saved and restored as one item."""

    params: Any  # nnx.State of the trainable parameters
    opt_state: Any
    ref_params: Any  # the KL reference (the base, or the policy at the last reset); None without KL
    step: int = 0  # optimizer steps done
    rollout: int = 0  # rollouts used up: the index of the current one
    cursor: int = 0  # steps done from the current rollout
    nonfinite_run: int = 0  # steps in a row whose loss or gradient was not finite
    skipped_empty: int = 0  # steps with nothing to learn (every advantage zero, or no tokens)
    skipped_nonfinite: int = 0


@dataclasses.dataclass
class Batch:
    """A rollout ready to train on."""

    arrays: dict[str, np.ndarray]  # tokens, mask [B, T]; loss_mask, old_logp (, ref_logp) [B, W] (the last W columns); adv [B]
    minibatches: list[list[dict[str, np.ndarray]]]  # its steps in order (mu passes x M minibatches), K micro-batches of [R, ...] (with the step's prompt table under share_prompts: rollout._share)
    data_before: dict | None = None  # the prompt iterator's state before it (None: restored mid-way)
    metrics: dict = dataclasses.field(default_factory=dict)  # logged with its first step
    completions: list[dict] = dataclasses.field(default_factory=list)  # rows for completions.jsonl


def init_training(model: Decoder, config: TrainConfig, mesh):
    """(graphdef, params, rest, opt_state, train_step): the model split into trainable parameters
    and the rest, the optimizer state created with the parameters' shardings, the update step."""
    tx = make_optimizer(config.optim, config.steps)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state, opt_sh = init_opt_state(tx, params, mesh)
    return graphdef, params, rest, opt_state, make_train_step(graphdef, rest, config, tx, params, opt_sh, mesh)


def make_train_step(graphdef, rest, config: TrainConfig, tx, params, opt_sh, mesh):
    """step(params, opt_state, micro_batches) -> (params, opt_state, stats): one optimizer step on a
    minibatch given as a list of K micro-batches (`rollout.minibatches`), placed with
    `micro_batch_to_global`. Micro-batches may differ in width (the rollout cuts each to its own longest
    completion): each is its own jitted program (compiled once per width), which adds its gradient
    of the loss numerator to the running sum; a last program divides by the global denominator and
    applies the optimizer, so accumulation equals one big batch.

    A step whose denominator is zero (nothing to learn: every completion masked, or every advantage
    zero and no KL term) or whose loss or gradient is not finite changes neither the parameters nor
    the optimizer state (no weight decay, no moment update): it is skipped and counted. Parameters,
    optimizer state and the running gradient sum are donated (updated in place).
    """
    g = config.grpo
    temperature = config.sampling.temperature or 1.0
    param_sh, replicated = jax.tree.map(lambda x: x.sharding, params), sharding.replicated(mesh)

    def loss_fn(params, kv, mb):
        model = nnx.merge(graphdef, params, rest)
        start = mb["tokens"].shape[-1] - mb["loss_mask"].shape[-1]  # the loss covers the last W columns
        prefix = None if kv is None else SharedPrefix(*kv, mb["prefix_mask"], mb["prefix_of_row"])
        logp_RxW, entropy_RxW = per_token_logprobs(model, mb["tokens"], mb["mask"], temperature,
                                                   config.logprob_chunk_tokens, start=start, prefix=prefix)
        num, den, stats = grpo.policy_loss(
            logp_RxW, mb["old_logp"], mb["adv"], mb["loss_mask"], epsilon_low=g.epsilon_low,
            epsilon_high=g.epsilon_high, aggregation=g.aggregation, sequence_ratio=g.sequence_ratio,
            max_len=config.sampling.max_new_tokens, beta=g.beta, ref_logp_BxT=mb.get("ref_logp"),
            kl_estimator=g.kl_estimator)
        m_RxW = mb["loss_mask"]
        stats["entropy_sum"] = (entropy_RxW * m_RxW).sum()
        diff_RxW = jnp.where(m_RxW, jnp.abs(logp_RxW - mb["old_logp"]), 0.0)
        stats["logp_diff_sum"], stats["logp_diff_max"] = diff_RxW.sum(), diff_RxW.max()
        stats["informative"] = jnp.any((mb["adv"] != 0) & m_RxW.any(-1))  # some row with tokens and an advantage
        return num, (den, stats)

    # Shared prompts (`optim.share_prompts`): one program computes the step's prompts' keys and
    # values (`prompts`); each micro-batch reads them and also sums the loss's gradient with respect
    # to them (`dkv`, float32); `apply` carries that sum back through a recomputed prompt forward
    # (jax.vjp). Exact: the chain rule, in two parts.
    def prompt_kv(params, tokens_UxS, mask_UxS):
        """Every layer's keys and values [L, U, ...] of the step's prompts, split over the row
        devices where the U prompts divide."""
        model = nnx.merge(graphdef, params, rest)
        kv = model.prefix_kv(constrain_rows(tokens_UxS, mesh), constrain_rows(mask_UxS, mesh))
        return by_prompt(kv)

    by_prompt = lambda kv: jax.tree.map(lambda a: constrain_rows(a, mesh, axis=1), kv)  # one layout for kv, dkv

    @jax.jit
    def prompts(params, tokens_UxS, mask_UxS):
        kv = prompt_kv(params, tokens_UxS, mask_UxS)
        return kv, jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), kv)

    @functools.partial(jax.jit, out_shardings=(param_sh, None, replicated), donate_argnums=(1, 4))
    def accumulate(params, grads, mb, kv=None, dkv=None):
        (num, (den, stats)), (micro_grads, micro_dkv) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            params, kv, mb)
        grads = jax.tree.map(jnp.add, grads, micro_grads)
        if kv is not None:
            dkv = by_prompt(jax.tree.map(lambda a, b: a + b.astype(jnp.float32), dkv, micro_dkv))
        return grads, dkv, (num, den, stats)

    @functools.partial(jax.jit, out_shardings=(param_sh, opt_sh, replicated), donate_argnums=(0, 1))
    def apply(params, opt_state, grads, parts, table=None, dkv=None):
        if table is not None:
            kv, prompt_vjp = jax.vjp(lambda p: prompt_kv(p, *table), params)
            grads = jax.tree.map(jnp.add, grads, prompt_vjp(jax.tree.map(lambda d, a: d.astype(a.dtype), dkv, kv))[0])
        num_K, den_K, stats = jax.tree.map(lambda *x: jnp.stack(x), *parts)
        num, den = num_K.sum(), den_K.sum()
        grads = jax.tree.map(lambda x: x / jnp.maximum(den, 1e-12), grads)
        loss, grad_norm = num / jnp.maximum(den, 1e-12), optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        empty = (den == 0) | (not g.beta and ~jnp.any(stats["informative"]))
        applied = ~empty & finite
        updates, new_opt = tx.update(grads, opt_state, params)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(applied, n, o), new, old)
        params, opt_state = keep(optax.apply_updates(params, updates), params), keep(new_opt, opt_state)
        tokens = jnp.maximum(stats["tokens"].sum(), 1)
        out = {
            "loss": loss, "grad_norm": grad_norm, "applied": applied, "empty": empty, "nonfinite": ~finite & ~empty,
            "clip_low_frac": (stats["clip_low_frac"] * stats["tokens"]).sum() / tokens,
            "clip_high_frac": (stats["clip_high_frac"] * stats["tokens"]).sum() / tokens,
            "ratio_min": stats["ratio_min"].min(), "ratio_max": stats["ratio_max"].max(),
            "entropy": stats["entropy_sum"].sum() / tokens,
            "logp_diff_mean": stats["logp_diff_sum"].sum() / tokens, "logp_diff_max": stats["logp_diff_max"].max(),
        }
        if g.beta:
            out["kl"] = (stats["kl"] * stats["tokens"]).sum() / tokens
        return params, opt_state, out

    zeros = jax.jit(lambda p: jax.tree.map(jnp.zeros_like, p), out_shardings=param_sh)

    def step(params, opt_state, micro_batches: Sequence[dict]):
        grads, parts, table, kv, dkv = zeros(params), [], None, None, None
        if "prefix_tokens" in micro_batches[0]:  # the step's prompt table (the same in each micro-batch)
            table = (micro_batches[0]["prefix_tokens"], micro_batches[0]["prefix_mask"])
            kv, dkv = prompts(params, *table)
        for mb in micro_batches:
            grads, dkv, part = accumulate(params, grads, mb, kv, dkv)
            parts.append(part)
        del kv  # apply recomputes it
        return apply(params, opt_state, grads, parts, table, dkv)

    step.accumulate = accumulate  # the micro-batch program, for memory analysis (bench.scale)
    return step


def pass_logprobs(fn, params, steps: list[list[dict[str, np.ndarray]]], rows_SxKxR: np.ndarray,
                  shape: tuple[int, int], mesh) -> np.ndarray:
    """[B, W] log-probs under `params` (`fn`: a `logprob_pass`) of a rollout's tokens in the loss's W
    columns (this process's rows), computed on the update's micro-batches of one pass over the
    rollout (`steps`, holding rows `rows_SxKxR`): each cut to its own width, so a row's columns past
    its micro-batch's width are 0 (the loss never looks there), and with shared prompts each step's
    prompt table runs once."""
    done = []  # (rows_R, logp_RxW): every program dispatched before the first result is fetched
    for micro_batches, rows_KxR in zip(steps, rows_SxKxR):
        kv = None  # the keys and values of the step's prompt table, once per step
        for mb, rows_R in zip(micro_batches, rows_KxR):
            start = mb["tokens"].shape[1] - mb["loss_mask"].shape[1]
            mb = micro_batch_to_global({k: v for k, v in mb.items() if k in _LOGPROB_INPUTS}, mesh)
            prefix = None
            if "prefix_tokens" in mb:
                if kv is None:
                    kv = fn.prefix_kv(params, mb["prefix_tokens"], mb["prefix_mask"])
                prefix = SharedPrefix(*kv, mb["prefix_mask"], mb["prefix_of_row"])
            done.append((rows_R, fn(params, mb["tokens"], mb["mask"], start=start, prefix=prefix)))
    out_BxW = np.zeros(shape, np.float32)
    for rows_R, logp_RxW in done:
        out_BxW[rows_R, :logp_RxW.shape[1]] = rows_to_local(logp_RxW, mesh)
    return out_BxW


_LOGPROB_INPUTS = ("tokens", "mask", "prefix_tokens", "prefix_mask", "prefix_of_row")


class Trainer:
    """The fixed parts of a run (config, mesh, tokenizer, prompts, the jitted step and log-prob pass,
    the checkpointer), its two halves, `rollout` and `update`, and the run's evaluation record."""

    def __init__(self, config: TrainConfig, workdir: Path, source: hub.ModelSource | None = None):
        self.workdir, self.requested = workdir, config
        workdir.mkdir(parents=True, exist_ok=True)
        self.mesh = sharding.make_mesh(config.mesh)
        source = source or model_source(config, workdir)
        model_path = source.path if source else None
        self.prompts, self.held_out = load_task(config.task, config.seed, workdir / "data", config.prompts_per_rollout,
                                                tokenizer_dir=model_path)
        examples = self.prompts.examples() + self.held_out
        model, self.tok, self.config = setup_model(config, model_path, workdir, self.mesh, examples)
        check_against_model(self.config, self.tok, examples)
        self.main_process = jax.process_index() == 0
        if self.main_process:
            write_run_files(workdir, config, self.config, self.tok, source)
        self.graphdef, params, self.rest, opt_state, self._update_fn = init_training(model, self.config, self.mesh)
        ref_params = jax.tree.map(jnp.copy, params) if config.grpo.beta else None
        self._initial = TrainState(params, opt_state, ref_params)  # handed out once: the first update donates it
        self._logprobs = logprob_pass(self.graphdef, self.rest, self.mesh, config.sampling.temperature or 1.0,
                                      config.logprob_chunk_tokens)
        c = config.checkpoint  # restores also when saving is off (checkpoint.every=0)
        self.checkpointer = Checkpointer(workdir / "checkpoints", c.keep, c.best_metric, c.best_mode)
        self.evals = {"start": {}, "end": {}}  # held-out metrics before RL and at the newest evaluation
        self.resumed_from: int | None = None
        self.writer: MetricWriter | None = None  # opened by start(), after the logs are cut back
        self.stop = StopRequest()  # its SIGTERM/SIGINT handlers are installed from start() to close()

    def model(self, params) -> Decoder:
        return nnx.merge(self.graphdef, params, self.rest)

    def start(self) -> tuple[TrainState, Batch | None]:
        """The newest usable checkpoint's state and the rollout it was in the middle of, or a fresh
        state (once: the first update donates its buffers). The logs are cut back to that step, so
        that no step appears twice, and opened; from here a SIGTERM/SIGINT sets `stop.requested`."""
        state, self._initial = self._initial, None
        try:
            restored = self.checkpointer.restore_latest(_abstract(state), check_meta=self._use_meta)
        except UserError:
            self._refuse_older_format()
            raise
        batch = None
        if restored is not None:
            self.resumed_from, state, arrays, meta = restored
            if arrays is not None:
                if "rollout_hosts" in meta:  # every host's rows (older checkpoints: the first host's)
                    arrays = host_rows(arrays, jax.process_index(), jax.process_count(),
                                       self.config.sampling.num_samples)
                batch = Batch(arrays, minibatches(arrays, self.config, state.rollout))
        truncate_logs(self.workdir, -1 if self.resumed_from is None else self.resumed_from)
        self.writer = MetricWriter(self.workdir, enabled=self.main_process)
        self.stop.install()
        return state, batch

    def _use_meta(self, meta: dict) -> None:
        """Takes a checkpoint's data position and evaluation record (an error makes the step unusable)."""
        self.prompts.set_state(meta["data"])
        self.evals = {"start": dict(meta["start_eval"]), "end": dict(meta["end_eval"])}

    def _refuse_older_format(self) -> None:
        """Checkpoints from before the one-item TrainState (r1zero 0.1) do not restore: say so."""
        try:
            meta = self.checkpointer.read_meta(self.checkpointer.steps()[-1])
        except Exception:  # noqa: BLE001 - unreadable: the caller's error says which steps failed
            return
        if "progress" in meta:
            raise UserError(f"{self.checkpointer.directory} holds checkpoints of r1zero "
                            f"{meta.get('versions', {}).get('r1zero', '0.1')}, whose train state this version "
                            f"cannot restore; finish the run with that version, or start a new run directory")

    def rollout(self, state: TrainState) -> Batch:
        """The next rollout: sampled with the current parameters, scored, its advantages, and the
        recomputed old and reference log-probs its loss needs."""
        t0, data_before = time.perf_counter(), self.prompts.get_state()
        key = stream_key(self.config.seed, "rollout", state.rollout)
        ro = collect_rollout(self.model(state.params), self.tok, self.prompts, key, self.config, state.step, self.mesh)
        check_could_not_score(ro.scored, self.config.task.max_could_not_score, state.rollout)
        arrays = train_arrays(ro, self.config)
        layout = step_rows(arrays, self.config, state.rollout)
        passes = {"old_logp": state.params if self.config.grpo.recompute_old_logprobs else None,
                  "ref_logp": state.ref_params}
        if any(params is not None for params in passes.values()):
            first = self.config.num_minibatches  # the first pass over the rollout: every row once
            steps = minibatches(arrays, self.config, state.rollout, (layout[0][:first], layout[1][:first]))
            for name, params in passes.items():
                if params is not None:
                    arrays[name] = self.logprobs(params, steps, layout[0][:first], arrays["loss_mask"].shape)
        metrics = {"rollout": state.rollout, **rollout_metrics(ro, self.config, time.perf_counter() - t0)}
        return Batch(arrays, minibatches(arrays, self.config, state.rollout, layout), data_before, metrics,
                     completion_rows(ro, self.config))

    def logprobs(self, params, steps: list[list[dict[str, np.ndarray]]], rows_SxKxR: np.ndarray,
                 shape: tuple[int, int]) -> np.ndarray:
        """`pass_logprobs` with this run's log-prob program and mesh (a method: the benchmark times it)."""
        return pass_logprobs(self._logprobs, params, steps, rows_SxKxR, shape, self.mesh)

    def update(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Any]]:
        """One optimizer step on the rollout's next minibatch. The counters advance (the rollout
        index once it is used up), and the reference becomes the policy every ref_reset_every steps."""
        mb = [micro_batch_to_global(m, self.mesh) for m in batch.minibatches[state.cursor]]
        params, opt_state, stats = self._update_fn(state.params, state.opt_state, mb)
        stats = {"rollout": state.rollout, **{k: v.item() for k, v in jax.device_get(stats).items()}}
        used_up, step, ref = state.cursor + 1 == len(batch.minibatches), state.step + 1, state.ref_params
        every = self.config.grpo.ref_reset_every
        if ref is not None and every and step % every == 0:
            ref = jax.tree.map(jnp.copy, params)  # R1: reference := policy
        state = TrainState(
            params, opt_state, ref, step=step, rollout=state.rollout + used_up, cursor=0 if used_up else state.cursor + 1,
            nonfinite_run=state.nonfinite_run + 1 if stats["nonfinite"] else 0,
            skipped_empty=state.skipped_empty + int(stats["empty"]),
            skipped_nonfinite=state.skipped_nonfinite + int(stats["nonfinite"]))
        return state, stats

    def evaluate(self, state: TrainState) -> tuple[dict[str, float], list[dict]]:
        return evaluate(self.model(state.params), self.tok, self.held_out, self.config,
                        stream_key(self.config.seed, "eval"), self.mesh)

    def save(self, state: TrainState, batch: Batch | None) -> None:
        """Checkpoints `state` with the rollout in progress. A rollout no step has used yet is not
        saved: the checkpoint keeps the prompt position from before it, and a resumed run samples
        it again (same key, same prompts)."""
        unused = batch is not None and state.cursor == 0
        meta = {"data": batch.data_before if unused else self.prompts.get_state(),
                "start_eval": self.evals["start"], "end_eval": self.evals["end"],
                "config": to_dict(self.requested), "versions": _versions()}
        rows = None
        if batch is not None and not unused:  # every host's rows: the checkpoint's arrays are written once
            rows, meta["rollout_hosts"] = _all_hosts_rows(batch.arrays), jax.process_count()
        self.checkpointer.save(state.step, state, rows, meta)

    def close(self) -> None:
        self.stop.restore()
        if self.writer is not None:
            self.writer.close()
        self.checkpointer.close()


# ---------------------------------------------------------------------------------------------------
# Callbacks: what happens around the steps. Each hook sees the trainer; the loop calls them in order.


class Callback:
    def on_start(self, trainer: Trainer, state: TrainState) -> None:
        """Before the first rollout (after a fresh start or a resume)."""

    def on_rollout(self, trainer: Trainer, state: TrainState, batch: Batch) -> None:
        """A new rollout was sampled (for the steps after `state.step`)."""

    def on_step(self, trainer: Trainer, state: TrainState, batch: Batch | None, row: dict) -> None:
        """After optimizer step `state.step`: add to its metrics `row` (evaluation does). `batch` is
        the rollout still in progress (None once used up)."""

    def after_step(self, trainer: Trainer, state: TrainState, batch: Batch | None, row: dict) -> None:
        """After every `on_step`: act on the finished row (write it, checkpoint, show progress)."""

    def on_end(self, trainer: Trainer, state: TrainState, batch: Batch | None) -> None:
        """The loop ended: all steps done, or a stop was requested (`trainer.stop`)."""

    def close(self) -> None:
        """Always, last (also after an error)."""


class Evaluation(Callback):
    """Held-out evaluation: at step 0 (the epoch-0 audit, written to audit_epoch0.json), every
    `eval_every` steps and at the last step; the metrics join the step's row."""

    def on_start(self, trainer, state):
        if trainer.resumed_from is not None:
            return
        metrics, rows = trainer.evaluate(state)  # how the base behaves under the template, before any RL
        trainer.evals = {"start": metrics, "end": metrics}
        trainer.writer.write(0, metrics)
        trainer.writer.write_eval(0, rows)
        if trainer.main_process:
            write_audit(trainer.workdir, metrics, rows)

    def on_step(self, trainer, state, batch, row):
        c = trainer.config
        if (c.eval_every and state.step % c.eval_every == 0) or state.step == c.steps:
            trainer.evals["end"], rows = trainer.evaluate(state)
            row.update(trainer.evals["end"])
            trainer.writer.write_eval(state.step, rows)


class MetricsLog(Callback):
    """metrics.jsonl (+ TensorBoard): one row per step; completions.jsonl: each rollout's first rows."""

    def on_rollout(self, trainer, state, batch):
        trainer.writer.write_completions(state.step + 1, batch.completions)

    def after_step(self, trainer, state, batch, row):
        trainer.writer.write(state.step, row)


class Checkpointing(Callback):
    """A checkpoint every `checkpoint.every` steps (0: none on the way), at the last step, and when a
    stop is requested (also one that came between two steps, e.g. during a rollout), so that a
    stopped run can always be resumed."""

    def __init__(self):
        self.saved = None

    def on_start(self, trainer, state):
        self.saved = trainer.resumed_from

    def after_step(self, trainer, state, batch, row):
        c = trainer.config
        every = c.checkpoint.every
        if (every and state.step % every == 0) or state.step == c.steps or trainer.stop.requested:
            trainer.save(state, batch)
            self.saved = state.step

    def on_end(self, trainer, state, batch):
        if trainer.stop.requested and self.saved != state.step:
            trainer.save(state, batch)
            self.saved = state.step


class ProgressBar(Callback):
    def __init__(self, enabled: bool):
        self.enabled, self.bar = enabled, None

    def on_start(self, trainer, state):
        from tqdm import tqdm

        self.bar = tqdm(total=trainer.config.steps, initial=state.step, desc="grpo", unit="step",
                        disable=not self.enabled, dynamic_ncols=True)

    def after_step(self, trainer, state, batch, row):
        self.bar.update(1)
        if "reward/mean" in row:  # the rollout's numbers, shown until the next rollout
            self.bar.set_postfix(reward=f"{row['reward/mean']:.2f}", acc=f"{row['accuracy']:.2f}",
                                 len=f"{row['length']:.1f}", tok_s=f"{row['rollout_tokens_per_s']:.0f}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------------
# The loop.


def run(trainer: Trainer, state: TrainState, batch: Batch | None,
        callbacks: Sequence[Callback]) -> tuple[TrainState, Batch | None]:
    """Rollouts and updates until `steps` optimizer steps or a stop request."""
    while state.step < trainer.config.steps and not trainer.stop.requested:
        if batch is None:  # prompts -> samples -> rewards -> advantages
            batch = trainer.rollout(state)
            for cb in callbacks:
                cb.on_rollout(trainer, state, batch)
            if trainer.stop.requested:
                break
        first, t0 = state.cursor == 0, time.perf_counter()
        state, stats = trainer.update(state, batch)  # one minibatch, one optimizer step
        row = {**(batch.metrics if first else {}), **stats, "skipped_empty": state.skipped_empty,
               "skipped_nonfinite": state.skipped_nonfinite, "step_seconds": time.perf_counter() - t0}
        if state.cursor == 0:  # the rollout is used up
            batch = None
        for cb in callbacks:  # evaluation (and yours) add to the row ...
            cb.on_step(trainer, state, batch, row)
        for cb in callbacks:  # ... then it is written, checkpointed and shown
            cb.after_step(trainer, state, batch, row)
        check_finite(trainer, state)
    return state, batch


def check_finite(trainer: Trainer, state: TrainState) -> None:
    """Stops a run whose steps keep failing: max_nonfinite_in_a_row non-finite steps in a row."""
    limit = trainer.config.optim.max_nonfinite_in_a_row
    if state.nonfinite_run < limit:
        return
    if all_finite(state.params):
        where = "the parameters are those of the last finite update (the failed steps were skipped)"
    else:  # an applied update overflowed; no checkpoint ever holds a non-finite state
        steps = trainer.checkpointer.steps()
        where = "the parameters are no longer finite; " + (
            f"the newest checkpoint (step {steps[-1]}) holds finite ones" if steps else "no checkpoint was written")
    raise NonFiniteError(f"{state.nonfinite_run} steps in a row had a non-finite loss or gradient (step {state.step}, "
                         f"optim.max_nonfinite_in_a_row={limit}); stopping: {where}. A lower optim.learning_rate or "
                         f"optim.max_grad_norm usually helps.")


def train(config: TrainConfig, workdir: str | Path, progress: bool = True,
          callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Runs GRPO until `config.steps` optimizer steps; continues from the newest usable checkpoint in
    `workdir` if there is one (`check_resume` guards which config may continue a run). SIGTERM and
    SIGINT, or a callback setting `trainer.stop.requested`, end the run early with a checkpoint.
    `callbacks` run after the built-in ones. Returns the summary (held-out evaluation before RL and
    at the end)."""
    workdir = Path(workdir)
    source = model_source(config, workdir)  # from the Hub (or its cache) if model_dir is a Hub id
    check_config(config, source.path if source else None)
    with RunLock(workdir):  # one trainer per run directory, taken before anything in it is read or written
        check_resume(config, workdir)
        trainer = Trainer(config, workdir, source)
        callbacks = [Evaluation(), MetricsLog(), Checkpointing(), ProgressBar(progress), *callbacks]
        try:
            state, batch = trainer.start()
            for cb in callbacks:
                cb.on_start(trainer, state)
            state, batch = run(trainer, state, batch, callbacks)
            for cb in callbacks:
                cb.on_end(trainer, state, batch)
        finally:
            for cb in callbacks:
                cb.close()
            trainer.close()  # the logs, the checkpointer (after its last save commits), the signal handlers
        if state.step >= trainer.config.steps:  # finished (a stop after the last step changes nothing)
            hf.save_model(trainer.model(state.params), workdir / "final", tokenizer_dir=trainer.tok.path.parent)
        return write_summary(trainer, state)


def write_summary(trainer: Trainer, state: TrainState) -> dict[str, Any]:
    """summary.json: the held-out evaluation before RL and at the end, and the run's counts."""
    summary = {"start": trainer.evals["start"], "end": trainer.evals["end"], "steps": state.step,
               "rollouts": state.rollout, "resumed_from": trainer.resumed_from,
               "preempted": state.step < trainer.config.steps,
               "skipped_empty": state.skipped_empty, "skipped_nonfinite": state.skipped_nonfinite}
    if trainer.main_process:
        (trainer.workdir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


# ---------------------------------------------------------------------------------------------------
# The run directory: which config may continue it, and what it holds.


def check_config(config: TrainConfig, model_path: Path | None = None) -> None:
    """What the config dataclasses cannot check themselves (names in registries, the task's files
    and template, rendered with the tokenizer in `model_path`), before anything is written."""
    for name in dict.fromkeys((*config.task.rewards, config.task.accuracy_reward, "format")):
        try:
            rewards.get(name)
        except UserError as e:
            raise UserError(f"task.rewards / task.accuracy_reward: {e}") from None
    g = config.grpo
    for key, value, known in (("grpo.advantage", g.advantage, grpo.ADVANTAGES),
                              ("grpo.aggregation", g.aggregation, grpo.AGGREGATIONS),
                              ("grpo.kl_estimator", g.kl_estimator, grpo.KL_ESTIMATORS)):
        if value not in known:
            raise UserError(f"{key} must be one of {', '.join(known)}, got {value!r}")
    for name in config.evaluation.best_of:
        try:
            rewards.get(name)
        except UserError as e:
            raise UserError(f"evaluation.best_of: {e}") from None
    if "code" in (*config.task.rewards, config.task.accuracy_reward, *config.evaluation.best_of):
        from r1zero.rewards.code import sandbox

        sandbox(config.code)  # started and probed now: a machine where it cannot run fails before the run directory
    if model_path is not None:  # a model section that names another architecture fails before the run directory
        hf.run_model_config(model_path, config.model)
    check_task(config.task, model_path)


def check_could_not_score(scored: rewards.Scored, limit: float, rollout: int) -> None:
    """Stops the run when more than `limit` of a rollout's rows could not be scored (a broken
    sandbox or checker would otherwise train on ever fewer rows, silently)."""
    bad, rows = int((~scored.valid).sum()), len(scored.valid)
    if bad > limit * rows:
        reasons = sorted({r for r in scored.reasons if r})
        raise UserError(f"rollout {rollout}: {bad} of {rows} completions could not be scored (over "
                        f"task.max_could_not_score={limit}); first reasons: {reasons[:3]}")


def check_against_model(config: TrainConfig, tok: Tokenizer, examples: list[dict]) -> None:
    """What can only be checked against the model, its tokenizer and the prompts: at set-up, before
    the run directory is written (the vocabulary, the positions the model has, the longest prompt)."""
    s, vocab, positions = config.sampling, config.model.vocab_size, config.model.max_position_embeddings
    if s.top_k > vocab:
        raise UserError(f"sampling.top_k must be at most the vocabulary ({vocab}), got {s.top_k}")
    eos = s.eos_ids if s.eos_ids is not None else tok.eos_ids
    if any(not 0 <= i < vocab for i in eos):
        raise UserError(f"sampling.eos_ids must be token ids below the vocabulary ({vocab}), got {eos}")
    if s.max_prompt_len + s.max_new_tokens > positions:
        raise UserError(f"sampling.max_prompt_len + sampling.max_new_tokens ({s.max_prompt_len} + {s.max_new_tokens}) "
                        f"must be at most the model's max_position_embeddings ({positions})")
    if not s.truncate_prompts and examples:
        length, ex = max((len(tok.encode(ex["prompt"])), ex.get("id", "")) for ex in examples)
        if length > s.max_prompt_len:
            raise UserError(f"sampling.max_prompt_len ({s.max_prompt_len}) is shorter than prompt {ex!r} "
                            f"({length} tokens); raise it, or set sampling.truncate_prompts to cut prompts from the left")
    names = metric_names(config.evaluation, votes=config.task.accuracy_reward in rewards.ANSWER_KEYS)
    if config.checkpoint.best_metric and config.checkpoint.best_metric not in names:
        raise UserError(f"checkpoint.best_metric must be one of the evaluation's metrics ({', '.join(names)}), "
                        f"got {config.checkpoint.best_metric!r}")


def resumable_fields(stored: TrainConfig) -> tuple[str, ...]:
    """Config fields a resumed run may change: they change when or what is logged and saved, or
    for how long it runs, but nothing it computes (`steps` only under a constant schedule: the
    cosine and linear schedules decay to the last step)."""
    fields = ("eval_every", "log_completions", "checkpoint.every", "checkpoint.keep", "checkpoint.best_metric",
              "evaluation", *(f"evaluation.{f.name}" for f in dataclasses.fields(EvalConfig)))
    return fields + (("steps",) if stored.optim.schedule == "constant" else ())


def check_resume(config: TrainConfig, workdir: Path) -> None:
    """The resume rule: a run directory with checkpoints belongs to the config in its config.json.
    Another config is refused (naming the changed keys) unless it changes only `resumable_fields`;
    those changes are appended to overrides.jsonl. Without a checkpoint nothing is continued: the
    run starts over with the config given (e.g. after fixing a value that failed at set-up)."""
    if not (workdir / "config.json").is_file() or not _checkpoint_steps(workdir):
        return
    stored = load_run_config(workdir)
    changed = _changed_keys(to_dict(stored), to_dict(config))
    refused = [k for k in changed if k not in resumable_fields(stored)]
    if refused:
        raise UserError(f"{workdir} is a run with a different config (changed: {', '.join(refused)}); resume it "
                        f"with its own config (r1zero train --workdir {workdir}), or use a new run directory")
    saved = _checkpointed_config(workdir)  # what the newest checkpoint was computed with
    as_json = json.loads(json.dumps(to_dict(config)))  # the meta holds JSON: lists where the config has tuples
    edited = [k for k in _changed_keys(saved, as_json) if k not in resumable_fields(stored)] if saved else []
    if edited:
        raise UserError(f"{workdir}/config.json differs from the config its checkpoints were written with "
                        f"(changed: {', '.join(edited)}; edited by hand?); put those values back, or use a new "
                        f"run directory")
    if changed and jax.process_index() == 0:
        with open(workdir / "overrides.jsonl", "a") as f:
            f.write(json.dumps({k: _get(to_dict(config), k) for k in changed}) + "\n")


def _checkpoint_steps(workdir: Path) -> list[int]:
    """The steps in a run directory's checkpoints/ (usable or not), without creating anything."""
    d = workdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()) if d.is_dir() else []


def _checkpointed_config(workdir: Path) -> dict | None:
    """The config recorded in the newest checkpoint's meta, if one can be read."""
    ckpt = Checkpointer(workdir / "checkpoints")
    try:
        steps = ckpt.steps()
        return ckpt.read_meta(steps[-1]).get("config") if steps else None
    except Exception:  # noqa: BLE001 - an unreadable newest step is the restore's business (it falls back)
        return None
    finally:
        ckpt.close()


def load_run_config(workdir: str | Path) -> TrainConfig:
    """The config a run directory was started with (its config.json)."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise MissingFileError(f"{workdir} is not a run directory (no config.json)")
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object")
    return from_dict(TrainConfig, data, where=str(path))


def _changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _changed_keys(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(prefix + k)
    return out


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


def model_source(config: TrainConfig, workdir: Path | None = None) -> hub.ModelSource | None:
    """Where `config.model_dir`'s files are (None: a random model). A run with checkpoints loads the
    Hub revision its model_source.json recorded, so a resume never picks up a newer upload."""
    if not config.model_dir:
        return None
    pinned = None
    if workdir is not None and hub.is_hub_id(config.model_dir) and _checkpoint_steps(workdir):
        record = workdir / "model_source.json"
        data = read_json(record) if record.is_file() else None
        pinned = data.get("revision") if isinstance(data, dict) and data.get("model_dir") == config.model_dir else None
        if not isinstance(pinned, str) or not pinned:
            raise UserError(f"{record} is missing or damaged, and it is what says which revision of {config.model_dir} "
                            f"this run's checkpoints were trained from; write it back as {{\"model_dir\": "
                            f"\"{config.model_dir}\", \"revision\": \"<commit>\"}} (the commits cached: "
                            f"huggingface-cli scan-cache)")
    return hub.resolve(config.model_dir, pinned)


def setup_model(config: TrainConfig, model_path: Path | None, workdir: Path, mesh, examples: list[dict]):
    """(model, tokenizer, config): from `model_path`, or a random `config.model` with a character
    tokenizer of the characters the task's examples use, written into the run directory."""
    if model_path is not None:
        model, model_config = hf.load_model(model_path, mesh, given=config.model)
        tok = Tokenizer(model_path)
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


def write_run_files(workdir: Path, requested: TrainConfig, config: TrainConfig, tok: Tokenizer,
                    source: hub.ModelSource | None = None) -> None:
    """The run directory describes itself: the config as given (what a resume reads), where the
    model came from (the Hub revision), the tokenizer files, and the model config the run derived
    (e.g. the vocabulary of its tokenizer)."""
    (workdir / "config.json").write_text(json.dumps(to_dict(requested), indent=1) + "\n")
    if source is not None:
        (workdir / "model_source.json").write_text(json.dumps(source.record(requested.model_dir), indent=1) + "\n")
    src = tok.path.parent
    if src != workdir / "tokenizer":
        (workdir / "tokenizer").mkdir(exist_ok=True)
        for name in hf.TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, workdir / "tokenizer" / name)
    (workdir / "model_config.json").write_text(
        json.dumps(hf.hf_config_dict(config.model, list(tok.eos_ids) or None), indent=1) + "\n")


def write_audit(workdir: Path, metrics: dict[str, float], rows: list[dict], examples: int = 8) -> None:
    """audit_epoch0.json: the base model under the template before RL (the step-0 evaluation) with
    some of its completions, so pre-existing behaviour is never mistaken for emergence."""
    audit = {"note": "held-out evaluation of the base model before any RL update (step 0)",
             "metrics": {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()},
             "examples": rows[:examples]}  # NaN (an empty side of a split) as null, as in metrics.jsonl
    (workdir / "audit_epoch0.json").write_text(json.dumps(audit, indent=1) + "\n")


def truncate_logs(workdir: Path, step: int) -> None:
    """Cuts metrics.jsonl, completions.jsonl and eval_completions.jsonl back to rows of steps <= `step`,
    so that no step appears twice after a resume. A line that is not a row (a write cut short by a
    kill or a full disk, or damage) is left out with a warning naming it; the file as it was is kept
    beside it. Only the first host writes logs."""
    if jax.process_index() != 0:
        return
    for name in ("metrics.jsonl", "completions.jsonl", "eval_completions.jsonl"):
        path = workdir / name
        if path.is_file():
            keep, bad = [], []
            for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                try:
                    row_step = json.loads(line)["step"]
                    if not isinstance(row_step, int) or isinstance(row_step, bool):
                        raise TypeError(row_step)
                except (ValueError, TypeError, KeyError, IndexError):  # torn by a kill, or damaged
                    bad.append(i)
                    continue
                if row_step <= step:
                    keep.append(line)
            if bad:
                shutil.copyfile(path, path.with_name(path.name + ".before-resume"))
                logging.getLogger("r1zero.train").warning(
                    "%s: lines %s are not log rows; left out (the whole file is kept as %s.before-resume)",
                    path, bad[:10], path.name)
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in keep))
            tmp.replace(path)


def load_run_model(workdir: str | Path, step: int | None = None) -> tuple[Decoder, Tokenizer, TrainConfig, int]:
    """(model, tokenizer, config, step) of checkpoint `step` of a run (default: the newest usable
    one), on the run's mesh."""
    workdir = Path(workdir)
    config = load_run_config(workdir)
    mesh = sharding.make_mesh(config.mesh)
    tok = Tokenizer(workdir / "tokenizer")
    if config.model_dir:
        path = model_source(config, workdir).path
        model, _ = hf.load_model(path, mesh, given=config.model)
    else:
        model = create_model(dataclasses.replace(config.model, vocab_size=tok.vocab_size), mesh, seed=config.seed)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if not _checkpoint_steps(workdir):
        raise MissingFileError(f"{workdir}/checkpoints holds no checkpoint")
    ckpt = Checkpointer(workdir / "checkpoints")
    steps = ckpt.steps()
    if step is not None and step not in steps:
        raise UserError(f"no checkpoint at step {step} in {workdir}/checkpoints (steps: {steps})")
    try:
        step, params = ckpt.restore_params(step, _abstract(params))
    finally:
        ckpt.close()
    return nnx.merge(graphdef, params, rest), tok, config, step


def export_run(workdir: str | Path, out: str | Path, step: int | None = None) -> tuple[int, Path]:
    """Writes the parameters of checkpoint `step` (default: the newest usable one) of a run as a
    Hugging Face directory with the run's tokenizer; returns (the step exported, the directory)."""
    model, _, _, step = load_run_model(workdir, step)
    return step, hf.save_model(model, out, tokenizer_dir=Path(workdir) / "tokenizer")


class RunLock:
    """One trainer per run directory: an exclusive lock on `workdir/.lock`, which names its holder
    (host, pid, since when; "released" once it is done). The kernel drops the lock when the holder
    dies, so a lock left by a killed run is stale and taken over; a live holder is refused, by name.
    Only the first host of a multi-host run takes it."""

    def __init__(self, workdir: Path):
        self.path, self._fd = workdir / ".lock", None

    def acquire(self) -> None:
        import fcntl
        import os
        import socket

        if jax.process_index() != 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{self.path.parent} is in use by another trainer ({holder}); wait for it to end, or "
                            f"use another run directory") from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._fd = fd

    def release(self) -> None:
        import os

        if self._fd is not None:  # the file stays (unlinking it would let a waiting opener lock a ghost)
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.write(self._fd, json.dumps({"released": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class StopRequest:
    """`requested` is set by SIGTERM/SIGINT (once installed) or by anyone who wants the run to end;
    the loop then ends with a checkpoint and returns."""

    def __init__(self):
        self.requested, self._old = False, {}

    def install(self) -> None:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self) -> None:
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


def _all_hosts_rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rollout's rows of every host, host after host (what a checkpoint keeps: orbax writes
    numpy arrays from the first host alone)."""
    if jax.process_count() == 1:
        return arrays
    from jax.experimental import multihost_utils

    gathered = {k: np.asarray(multihost_utils.process_allgather(v)) for k, v in arrays.items()}
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in gathered.items()}


def host_rows(arrays: dict[str, np.ndarray], index: int, count: int, group: int) -> dict[str, np.ndarray]:
    """Host `index` of `count`'s share of a checkpoint's rows (the inverse of `_all_hosts_rows`; a run
    resumed on another number of hosts splits them anew, in whole groups of `group` rows)."""
    total = len(arrays["adv"])
    if total % (count * group):
        raise UserError(f"the checkpoint's rollout has {total // group} groups, which do not split over {count} "
                        f"hosts; resume on a number of hosts that divides them (it was saved by a run on another)")
    n = total // count
    return {k: v[index * n:(index + 1) * n] for k, v in arrays.items()}


def _abstract(tree):
    """Shapes, dtypes and shardings of the arrays of `tree` (other leaves as they are)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                        if isinstance(x, jax.Array) else x, tree)


def _versions() -> dict[str, str]:
    import flax
    import orbax.checkpoint

    from r1zero import __version__

    return {"r1zero": __version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "orbax": orbax.checkpoint.__version__}
