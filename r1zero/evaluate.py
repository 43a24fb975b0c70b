"""Held-out evaluation: every example decoded greedily and sampled once, scored by the task's
accuracy check and the format check, summarised by R1-Zero's text statistics."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from r1zero import rewards
from r1zero.config import TrainConfig
from r1zero.metrics import text_stats
from r1zero.models import Decoder
from r1zero.sampler import sample
from r1zero.tokenizer import Tokenizer


MODES = ("greedy", "sampled")


def metric_names() -> list[str]:
    """The names `evaluate` reports (what checkpoint.best_metric may name)."""
    return [f"eval/{mode}_{k}" for mode in MODES for k in text_stats(["x"], np.ones(1), [True], [True])]


def evaluate(model: Decoder, tok: Tokenizer, examples: list[dict], config: TrainConfig, key: jax.Array,
             mesh=None) -> tuple[dict[str, float], list[dict]]:
    """(metrics, rows) on the held-out examples, decoded greedily and sampled once each at the
    training temperature: `text_stats` of both (eval/greedy_accuracy, eval/sampled_step_by_step, ...)
    and one row per example with both completions (for per-prompt learning curves). On several hosts
    each takes an equal share, the means are combined and the rows are this host's."""
    n = jax.process_count()
    if n > 1:
        examples = examples[: len(examples) // n * n][jax.process_index()::n]
    acc = config.task.accuracy_reward
    out, rows = {}, [{"id": ex.get("id", str(i)), "answer": ex.get("answer")} for i, ex in enumerate(examples)]
    for name, temperature in zip(MODES, (0.0, config.sampling.temperature)):
        scfg = dataclasses.replace(config.sampling, num_samples=1, temperature=temperature)
        s = sample(model, [ex["prompt"] for ex in examples], key, scfg, tok, mesh)
        parts = rewards.score(s.texts, examples, {}, measure=(acc, "format")).parts
        correct_B = rewards.passed(parts[acc])
        out.update(text_stats(s.texts, s.completion_mask.sum(1), correct_B, rewards.passed(parts["format"]),
                              prefix=f"eval/{name}_"))
        for row, text, ok in zip(rows, s.texts, correct_B):
            row[name], row[f"{name}_correct"] = text, bool(ok)
    if n > 1:
        from jax.experimental import multihost_utils

        means = multihost_utils.process_allgather(np.asarray(list(out.values()))).mean(0)
        out = dict(zip(out, map(float, means)))
    return out, rows
