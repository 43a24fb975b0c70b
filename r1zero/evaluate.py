"""Held-out evaluation, the one code path of `train`'s periodic evaluation and `r1zero eval`.

Each problem is decoded greedily and sampled `evaluation.samples` times at the sampling temperature
(`eval_rows`: one row per problem with every completion, its extracted answer, length and scores);
`summarize` turns rows into metrics: R1-Zero's text statistics of the greedy and the sampled
completions (eval/greedy_accuracy, eval/sampled_accuracy = pass@1, ...), and with several samples
pass@k (unbiased), maj@k (majority vote over equivalent answers), best-of-N under named rewards and
95% bootstrap intervals. Budget forcing (s1) continues completions across sampler calls.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Sequence

import jax
import numpy as np

from r1zero import rewards
from r1zero.config import EvalConfig, TrainConfig
from r1zero.metrics import text_stats
from r1zero.models import Decoder
from r1zero.sampler import sample
from r1zero.tokenizer import Tokenizer

MODES = ("greedy", "sampled")
THINK_END = "</think>"


def metric_names(spec: EvalConfig = EvalConfig(), votes: bool = True) -> list[str]:
    """The names `summarize` reports for `spec` (what checkpoint.best_metric may name); maj@k only
    with `votes` (an accuracy reward with an answer key: not code)."""
    stats = list(text_stats(["x"], np.ones(1), [True], [True], golds=["x"]))
    names = [f"eval/{mode}_{k}" for mode in (MODES if spec.samples else ("greedy",)) for k in stats]
    names += [f"eval/{m}@{k}" for k in spec.ks for m in (("pass", "maj") if votes else ("pass",))]
    names += [f"eval/best_of_{spec.samples}/{r}" for r in spec.best_of if spec.samples]
    if spec.samples > 1:
        names += ["eval/pass@1_ci_low", "eval/pass@1_ci_high", "eval/could_not_score"]
        names += [f"eval/maj@{k}_ci_{end}" for k in spec.ks for end in ("low", "high") if votes]
    return names


def evaluate(model: Decoder, tok: Tokenizer, examples: list[dict], config: TrainConfig, key: jax.Array,
             mesh=None) -> tuple[dict[str, float], list[dict]]:
    """(metrics, rows) of the held-out `examples` under `config.evaluation`. On several hosts each
    takes an equal share; the rows are this host's, the metrics are over all of them."""
    n = jax.process_count()
    if n > 1:
        examples = examples[: len(examples) // n * n][jax.process_index()::n]
    rows = eval_rows(model, tok, examples, config, key, mesh)
    return summarize(gather_rows(rows), config), rows


def gather_rows(rows: list[dict]) -> list[dict]:
    """Every host's rows (equal shares), for metrics over all problems."""
    if jax.process_count() == 1:
        return rows
    import json

    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(rows).encode(), np.uint8)
    size = int(multihost_utils.process_allgather(np.asarray(len(data))).max())
    padded = multihost_utils.process_allgather(np.pad(data, (0, size - len(data)), constant_values=32))
    return [row for part in np.asarray(padded) for row in json.loads(bytes(part).decode())]


def eval_rows(model: Decoder, tok: Tokenizer, examples: list[dict], config: TrainConfig, key: jax.Array,
              mesh=None) -> list[dict]:
    """One row per problem: its greedy completion and `samples` sampled ones, each with the
    accuracy check's verdict, the answer it votes with, its length, format and `best_of` scores.
    With `batch_problems`, chunk c of the problems samples with fold_in(key, c)."""
    spec = config.evaluation
    size = spec.batch_problems or max(len(examples), 1)
    out = []
    for c, start in enumerate(range(0, len(examples), size)):
        chunk_key = key if size >= len(examples) else jax.random.fold_in(key, c)
        out += _chunk_rows(model, tok, examples[start:start + size], config, chunk_key, mesh)
    return out


def _chunk_rows(model, tok, examples, config: TrainConfig, key, mesh) -> list[dict]:
    spec, acc = config.evaluation, config.task.accuracy_reward
    vote_key = rewards.ANSWER_KEYS.get(acc, lambda text: None)
    rows = [{"id": ex.get("id", str(i)), "answer": ex.get("answer")} for i, ex in enumerate(examples)]
    for mode in MODES:
        if mode == "greedy" and not spec.greedy:
            continue
        G = 1 if mode == "greedy" else spec.samples
        if G == 0:  # greedy only
            for row in rows:
                row.update(samples=[], correct=[], answers=[], lengths=[], format=[], unscored=0,
                           best_of={r: [] for r in spec.best_of})
            continue
        scfg = dataclasses.replace(config.sampling, num_samples=G,
                                   temperature=0.0 if mode == "greedy" else config.sampling.temperature)
        texts, lengths = _complete([ex["prompt"] for ex in examples], key, scfg, spec, model, tok, mesh)
        repeated = [ex for ex in examples for _ in range(G)]
        parts = rewards.score(texts, repeated, {}, rewards.Context(seed=config.seed, code=config.code),
                              measure=(acc, "format", *spec.best_of)).parts
        correct, formatted = rewards.passed(parts[acc]), rewards.passed(parts["format"])
        for p, row in enumerate(rows):
            mine = slice(p * G, (p + 1) * G)
            if mode == "greedy":
                row.update(greedy=texts[p], greedy_correct=bool(correct[p]), greedy_length=int(lengths[p]),
                           greedy_format=bool(formatted[p]))
                continue
            row.update(sampled=texts[p * G], sampled_correct=bool(correct[p * G]), samples=texts[mine],
                       correct=correct[mine].tolist(), answers=[vote_key(t) for t in texts[mine]],
                       lengths=lengths[mine].tolist(), format=formatted[mine].tolist(),
                       unscored=int(np.isnan(parts[acc][mine]).sum()),
                       best_of={r: [None if np.isnan(v) else float(v) for v in parts[r][mine]] for r in spec.best_of})
    return rows


def _complete(prompts: list[str], key, scfg, spec: EvalConfig, model, tok, mesh) -> tuple[list[str], np.ndarray]:
    """(texts, lengths in tokens) of G completions per prompt, with budget forcing if asked."""
    if spec.min_think_tokens or spec.max_think_tokens:
        return budget_forced(model, tok, prompts, key, scfg, spec, mesh)
    s = sample(model, prompts, key, scfg, tok, mesh)
    return list(s.texts), s.completion_mask.sum(1)


def summarize(rows: list[dict], config: TrainConfig) -> dict[str, float]:
    """The metrics of `rows` (see metric_names)."""
    spec = config.evaluation
    out: dict[str, float] = {}
    if rows and "greedy" in rows[0]:
        out.update(text_stats([r["greedy"] for r in rows], np.asarray([r["greedy_length"] for r in rows]),
                              [r["greedy_correct"] for r in rows], [r["greedy_format"] for r in rows],
                              prefix="eval/greedy_", golds=[str(r["answer"]) for r in rows]))
    n = spec.samples
    if n == 0:  # greedy only
        return out
    flat = lambda key: [x for r in rows for x in r[key]]
    out.update(text_stats(flat("samples"), np.asarray(flat("lengths")), flat("correct"), flat("format"),
                          prefix="eval/sampled_", golds=[str(r["answer"]) for r in rows for _ in r["samples"]]))
    for k in spec.ks:
        out[f"eval/pass@{k}"] = float(np.mean([pass_at_k(n, sum(r["correct"]), k) for r in rows]))
        if config.task.accuracy_reward not in rewards.ANSWER_KEYS:  # nothing to vote with (code)
            continue
        maj = np.asarray([maj_at_k(r["answers"], r["correct"], k, np.random.default_rng([config.seed, k, i]),
                                   spec.vote_subsets) for i, r in enumerate(rows)])  # subsets: per (seed, k, problem)
        out[f"eval/maj@{k}"] = float(maj.mean())
        if n > 1:
            out[f"eval/maj@{k}_ci_low"], out[f"eval/maj@{k}_ci_high"] = bootstrap_ci(maj, config.seed, spec.bootstrap)
    for name in spec.best_of:
        out[f"eval/best_of_{n}/{name}"] = float(np.mean([
            best_of_n(np.asarray([np.nan if v is None else v for v in r["best_of"][name]]), np.asarray(r["correct"]))
            for r in rows]))
    if n > 1:
        per_problem = np.asarray([np.mean(r["correct"]) for r in rows])
        out["eval/pass@1_ci_low"], out["eval/pass@1_ci_high"] = bootstrap_ci(per_problem, config.seed, spec.bootstrap)
        out["eval/could_not_score"] = float(sum(r["unscored"] for r in rows))
    return out


THINK_START = "<think>"


def _thought_start(prompt: str, text: str) -> int | None:
    """Where in `text` an open thought starts: after the completion's last <think>, or at 0 when the
    prompt itself opens one (TinyZero-style); None when nothing is open or it has been closed."""
    start = text.rfind(THINK_START)
    if start >= 0:
        start += len(THINK_START)
    elif prompt.rfind(THINK_START) > prompt.rfind(THINK_END):
        start = 0
    else:
        return None
    return None if THINK_END in text[start:] else start


def budget_forced(model: Decoder, tok: Tokenizer, prompts: list[str], key, scfg, spec: EvalConfig,
                  mesh=None) -> tuple[list[str], np.ndarray]:
    """s1's budget forcing across sampler calls: each round continues every unfinished completion
    (prompt + its text so far), with </think> as a stop. A completion that closes its thinking
    before `min_think_tokens` has the tag replaced by `extend_with` and thinks on; one whose open
    thought passes `max_think_tokens` is cut there and closed ("</think>") and must answer. A
    completion that never opens <think> is left alone. Lengths count every token of the completion,
    appended text included (as the completion's own tokenization)."""
    count = lambda text: len(tok.encode(text, add_special_tokens=False))
    G, budget = scfg.num_samples, scfg.max_new_tokens
    rows = [p for p in prompts for _ in range(G)]
    texts, done = [""] * len(rows), np.zeros(len(rows), bool)
    stops = tuple(dict.fromkeys((*scfg.stop_strings, THINK_END)))
    # One sampler program for every round (a fixed max_new_tokens and prompt length; only the prompt
    # bucket varies): a row's text past the budget is cut afterwards.
    rcfg = dataclasses.replace(scfg, num_samples=1, stop_strings=stops, truncate_prompts=False,
                               max_prompt_len=scfg.max_prompt_len + budget + 64)
    cut = lambda text: tok.decode(tok.encode(text, add_special_tokens=False)[:budget])
    for round_ in range(budget + 2):  # every round adds a token to each row it continues
        todo = np.flatnonzero(~done)
        if not len(todo):
            break
        s = sample(model, [rows[r] + texts[r] for r in todo], jax.random.fold_in(key, round_), rcfg, tok, mesh)
        for i, r in enumerate(todo):
            text = texts[r] + s.texts[i]
            if count(text) > budget:  # out of tokens: the completion ends at the budget
                texts[r], done[r] = cut(text), True
                continue
            closed = text.endswith(THINK_END) and s.finish_reason[i] == "stop"
            body = text[: -len(THINK_END)] if closed else text
            start = _thought_start(rows[r], body)
            thought = count(body[start:]) if start is not None else 0
            if start is not None and spec.max_think_tokens and thought > spec.max_think_tokens:
                keep = tok.decode(tok.encode(body[start:], add_special_tokens=False)[:spec.max_think_tokens])
                texts[r] = body[:start] + keep + THINK_END  # out of thinking budget: answer now
            elif start is not None and closed and thought < spec.min_think_tokens:
                texts[r] = body + spec.extend_with  # think on
            else:
                texts[r] = text
                done[r] = not closed  # EOS, a stop string of its own, or out of tokens
            done[r] |= count(texts[r]) >= budget
    return texts, np.asarray([count(t) for t in texts])


# ---------------------------------------------------------------------------------------------------
# Numerics over n samples per problem: pure functions of the per-sample results.


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of a problem with `c` correct among `n` samples: 1 - C(n-c, k) / C(n, k),
    as a product (Chen et al. 2021), which neither overflows nor cancels."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def vote(keys: Sequence[str | None]) -> int | None:
    """The index of the sample whose answer wins a majority vote: equal keys vote together, None
    (no answer) never wins, and a tie goes to the answer that appeared first. None if no sample
    gave an answer."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
            first.setdefault(key, i)
    if not counts:
        return None
    return first[max(counts, key=lambda key: (counts[key], -first[key]))]


def maj_at_k(keys: Sequence[str | None], correct: Sequence[bool], k: int, rng: np.random.Generator,
             subsets: int = 64) -> float:
    """Majority-vote accuracy of `k` of a problem's samples: exact over every k-subset when there
    are at most `subsets` of them, else the mean over `subsets` random ones (drawn from `rng`)."""
    n = len(keys)
    if not 1 <= k <= n:
        raise ValueError(f"maj@k needs 1 <= k <= n ({n}), got {k}")
    if k == 1:  # a vote of one: that sample's answer, if it gave one
        return float(np.mean([key is not None and bool(c) for key, c in zip(keys, correct)]))
    if math.comb(n, k) <= subsets:
        picks = [list(p) for p in itertools.combinations(range(n), k)]
    else:
        picks = [sorted(rng.choice(n, k, replace=False)) for _ in range(subsets)]
    wins = [vote([keys[i] for i in p]) for p in picks]
    return float(np.mean([w is not None and bool(correct[p[w]]) for p, w in zip(picks, wins)]))


def best_of_n(scores: np.ndarray, correct: np.ndarray) -> float:
    """Whether the sample a reward ranks highest (NaN: lowest; ties: the first) is correct."""
    return bool(correct[int(np.argmax(np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf)))])


def bootstrap_ci(per_problem: np.ndarray, seed: int = 0, resamples: int = 1000) -> tuple[float, float]:
    """95% interval of the mean of per-problem values, by resampling problems with replacement."""
    values = np.asarray(per_problem, np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
