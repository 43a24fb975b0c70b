"""r1zero.evaluate's numerics against brute force: pass@k over every k-subset, majority voting with
equivalent answers, ties and unparseable ones, best-of-N by a named reward, bootstrap intervals."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter
from pathlib import Path

import jax
import numpy as np
import pytest

from r1zero import rewards
from r1zero.cli import main
from r1zero.config import EvalConfig, SamplingConfig, TaskConfig, TrainConfig
from r1zero.data.templates import render
from r1zero.evaluate import (best_of_n, bootstrap_ci, budget_forced, eval_rows, maj_at_k, metric_names, pass_at_k,
                             summarize, vote)
from r1zero.models import hf
from r1zero.sampler import sample
from r1zero.tokenizer import Tokenizer


def brute_pass_at_k(correct: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample(n):
    for c in range(n + 1):
        correct = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(correct, k), abs=1e-12), (n, c, k)
    assert pass_at_k(n, 0, 1) == 0.0 and pass_at_k(n, n, 1) == 1.0


def test_pass_at_k_is_stable_where_the_binomials_overflow():
    from fractions import Fraction
    from math import comb

    assert pass_at_k(2000, 1, 1) == pytest.approx(1 / 2000)
    for c, k in ((3, 1000), (1, 1999), (50, 10)):  # C(2000, 1000) overflows a float; exact in integers
        exact = 1 - Fraction(comb(2000 - c, k), comb(2000, k))
        assert pass_at_k(2000, c, k) == pytest.approx(float(exact), rel=1e-12), (c, k)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def brute_vote(keys: list) -> object:
    """Independent majority vote: most common non-None key, ties to the earliest first occurrence."""
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(k for k in keys if k is not None and counts[k] == best)


def test_equivalent_answers_vote_together_and_unparseable_ones_never_win():
    key = rewards.get_answer_key("math")
    texts = ["\\boxed{0.5}", "<answer>1/2</answer>", "\\boxed{\\frac{1}{2}}", "\\boxed{3}", "\\boxed{3}", "no answer",
             "no answer either", "I give up", "nothing"]
    keys = [key(t) for t in texts]
    assert keys[:3] == ["1/2"] * 3 and keys[5:] == [None] * 4  # three forms of one half, one vote
    for form in ("\\frac12", ".5", "+0.5", "x = 1/2", "$\\frac{1}{2}$.", "\\dfrac{1}{2}"):
        assert key(f"\\boxed{{{form}}}") == "1/2", form
    assert vote(keys) == 0  # 3 votes for 1/2 beat 2 for 3 and the 4 non-answers
    assert vote([None, None]) is None
    assert vote(["7", "3", "3", "7"]) == 0  # a tie goes to the answer seen first
    assert vote([None, "3", "7"]) == 1


def test_maj_at_k_is_exact_over_subsets_and_matches_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(1, 7))
        keys = [None if rng.random() < 0.3 else str(rng.integers(0, 3)) for _ in range(n)]
        correct = [k == "1" for k in keys]
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            expected = np.mean([brute_vote([keys[i] for i in s]) == "1" for s in subsets])
            assert maj_at_k(keys, correct, k, np.random.default_rng(0), subsets=10**6) == pytest.approx(expected)
    # more subsets than asked for: a seeded sample of them, close to the exact value
    keys, correct = ["1"] * 9 + ["2"] * 7, [True] * 9 + [False] * 7
    exact = np.mean([brute_vote([keys[i] for i in s]) == "1" for s in itertools.combinations(range(16), 5)])
    sampled = maj_at_k(keys, correct, 5, np.random.default_rng(1), subsets=2000)
    assert abs(sampled - exact) < 0.05 and sampled == maj_at_k(keys, correct, 5, np.random.default_rng(1), subsets=2000)


def test_best_of_n_picks_by_the_named_reward():
    correct = np.array([False, True, False, True])
    assert best_of_n(np.array([0.2, 0.9, 0.1, 0.9]), correct)  # the highest score (the first of a tie)
    assert not best_of_n(np.array([1.0, 0.0, np.nan, 0.5]), correct)
    assert not best_of_n(np.array([np.nan, np.nan, np.nan, np.nan]), correct)  # none scored: the first


def test_bootstrap_interval_holds_the_mean_and_is_seeded():
    values = np.random.default_rng(0).random(200) < 0.3
    lo, hi = bootstrap_ci(values, seed=3)
    assert lo < values.mean() < hi and hi - lo < 0.2 and (lo, hi) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)


# ---------------------------------------------------------------------------------------------------
# End to end on the shipped 0.8M base (multiply, the main job's task).

BASE = Path(__file__).parents[1] / "r1zero" / "assets" / "base_mult2"
EVAL_ARGS = ["--task", "multiply", "--set", "task.difficulty=2", "--set", "task.accuracy_reward=answer",
             "--set", 'sampling.stop_strings=["</answer>"]', "--set", "sampling.max_prompt_len=32",
             "--max-new-tokens", "96", "--template", "dialogue", "--limit", "12", "--batch-problems", "4",
             "--no-progress"]


def eval_config(**evaluation) -> TrainConfig:
    return TrainConfig(model_dir=str(BASE), seed=0,
                       sampling=SamplingConfig(num_samples=2, max_new_tokens=96, max_prompt_len=32,
                                               stop_strings=("</answer>",)),
                       task=TaskConfig(dataset="multiply", difficulty=2, template="dialogue", accuracy_reward="answer",
                                       rewards=("answer",)),
                       evaluation=EvalConfig(**evaluation))


@pytest.fixture(scope="module")
def base():
    return hf.load_model(BASE)[0], Tokenizer(BASE)


def prompts(n: int) -> list[dict]:
    return [{"id": f"p{a}", "question": f"{a}*{a + 3}=?", "answer": str(a * (a + 3)),
             "prompt": render("dialogue", f"{a}*{a + 3}=?")} for a in range(11, 11 + n)]


def test_eval_rows_are_seeded_and_chunking_is_the_same_as_calling_per_chunk(base):
    model, tok = base
    config = eval_config(samples=4, ks=(1, 2, 4), batch_problems=3)
    key = jax.random.key(7)
    rows = eval_rows(model, tok, prompts(6), config, key)
    assert rows == eval_rows(model, tok, prompts(6), config, key)  # deterministic for a seed
    whole = dataclasses.replace(config, evaluation=dataclasses.replace(config.evaluation, batch_problems=0))
    per_chunk = [r for c in range(2) for r in eval_rows(model, tok, prompts(6)[3 * c:3 * c + 3], whole,
                                                        jax.random.fold_in(key, c))]
    assert rows == per_chunk  # what r1zero eval resumes chunk by chunk
    assert all(len(r["samples"]) == 4 and r["sampled"] == r["samples"][0] for r in rows)
    key_of = rewards.get_answer_key("answer")
    assert all(r["answers"] == [key_of(t) for t in r["samples"]] for r in rows)
    metrics = summarize(rows, config)
    assert metrics["eval/sampled_accuracy"] == pytest.approx(np.mean([np.mean(r["correct"]) for r in rows]))
    assert metrics["eval/pass@4"] == pytest.approx(np.mean([any(r["correct"]) for r in rows]))
    assert set(metrics) == set(metric_names(config.evaluation))


def test_budget_forcing_replaces_an_early_think_end_and_closes_a_long_one(base):
    """Greedy completions of the base, unforced and forced: with a minimum above the thinking it
    does, the early </think> becomes the extension and it thinks on; with a maximum below it, its
    thinking is cut there and closed."""
    model, tok = base
    examples = prompts(4)
    scfg = dataclasses.replace(eval_config().sampling, temperature=0.0, num_samples=1)
    plain = [t for t in sample(model, [e["prompt"] for e in examples], jax.random.key(0), scfg, tok).texts]
    closing = [t for t in plain if "</think>" in t]
    assert closing, plain  # the base thinks in <think> tags under this template
    think = [len(tok.encode(t[: t.index("</think>")], add_special_tokens=False)) for t in closing]
    longer = EvalConfig(min_think_tokens=max(think) + 6, extend_with=" Wait,")
    texts, lengths = budget_forced(model, tok, [e["prompt"] for e in examples], jax.random.key(0), scfg, longer)
    for before, after, n in zip(plain, texts, lengths):
        if "</think>" not in before:
            continue
        head = before[: before.index("</think>")]
        assert after.startswith(head + " Wait,"), (before, after)  # the tag suppressed, the extension appended
        if "</think>" in after:  # thought at least the minimum before closing (unless the budget ran out)
            assert len(tok.encode(after[: after.index("</think>")], add_special_tokens=False)) >= longer.min_think_tokens
        assert n == len(tok.encode(after, add_special_tokens=False)) or n >= scfg.max_new_tokens
    shorter = EvalConfig(max_think_tokens=max(1, min(think) - 2))
    texts, _ = budget_forced(model, tok, [e["prompt"] for e in examples], jax.random.key(0), scfg, shorter)
    for before, after in zip(plain, texts):
        assert "<think>" in after and "</think>" in after
        thought = after[after.index("<think>") + len("<think>"): after.index("</think>")]
        assert len(tok.encode(thought, add_special_tokens=False)) <= shorter.max_think_tokens  # cut and closed
        assert before.startswith(after[: after.index("</think>")])  # the same thinking up to the cut
    # a completion that never opens <think> is left alone
    direct = [{"prompt": f"{e['question']} "} for e in examples]
    texts, _ = budget_forced(model, tok, [d["prompt"] for d in direct], jax.random.key(0), scfg, shorter)
    plain = sample(model, [d["prompt"] for d in direct], jax.random.key(0), scfg, tok).texts
    assert any("<think>" not in p for p in plain)
    assert [t for t, p in zip(texts, plain) if "<think>" not in p] == [p for p in plain if "<think>" not in p]


@pytest.mark.slow
def test_r1zero_eval_writes_resumes_and_refuses_another_request(tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["eval", "--compare", str(BASE), f"{BASE}/", "--n", "4", "--k", "1,2,4", "--best-of", "format",
            "--out", str(out), *EVAL_ARGS]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "maj@4" in printed and "best-of-4 by format" in printed
    report = json.loads((out / "eval.json").read_text())
    (a, ra), (b, rb) = report["results"].items()
    assert ra == rb and report["compare"][b]["ahead_at_k1"] == "tie"  # the same model, the same samples
    assert (out / "pass_at_k.png").read_bytes().startswith(b"\x89PNG")
    rows = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 12 and {r["chunk"] for r in rows} == {0, 1, 2}
    # a kill after two chunks: the rest is redone from the samples file, to the same numbers
    (out / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:8]) + '{"variant": "cut')
    (out / "eval.json").unlink()
    assert main(argv) == 0
    assert json.loads((out / "eval.json").read_text())["results"] == report["results"]
    code = main([*argv[:-len(EVAL_ARGS)], *EVAL_ARGS[:-1], "--seed", "3", "--no-progress"])
    assert code == 2 and "holds another evaluation (changed: config)" in capsys.readouterr().err


def test_greedy_only_evaluation_matches_the_greedy_of_a_sampled_one(tmp_path, capsys):
    base = ["eval", "--model", str(BASE), *EVAL_ARGS]
    assert main([*base, "--n", "2", "--out", str(tmp_path / "both")]) == 0
    assert main([*base, "--n", "0", "--out", str(tmp_path / "greedy")]) == 0
    both, greedy = (json.loads((tmp_path / d / "eval.json").read_text())["results"] for d in ("both", "greedy"))
    (both,), (greedy,) = both.values(), greedy.values()
    assert greedy == {k: v for k, v in both.items() if k.startswith("eval/greedy_")}
    assert set(greedy) == set(metric_names(EvalConfig(samples=0)))
    assert "pass@1 (mean" not in capsys.readouterr().out.split("written to")[-2]


def test_train_evaluates_with_the_same_code_and_names(tmp_path):
    from r1zero.train import train
    from tests.test_train import tiny_config

    config = tiny_config(steps=2, prompts_per_rollout=4, eval_every=2,
                         evaluation=EvalConfig(samples=3, ks=(1, 3), best_of=("format",)),
                         task=TaskConfig(dataset="digits", operation="max", difficulty=3, eval_size=8))
    train(config, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/greedy_accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2]
    for r in evals:
        assert set(r) - {"step"} - {k for k in r if not k.startswith("eval/")} == set(metric_names(config.evaluation))
        assert r["eval/pass@1_ci_low"] <= r["eval/sampled_accuracy"] <= r["eval/pass@1_ci_high"]
        assert r["eval/sampled_accuracy"] <= r["eval/pass@3"]
    per_problem = [json.loads(line) for line in (tmp_path / "run" / "eval_completions.jsonl").read_text().splitlines()]
    assert len(per_problem) == 2 * 8 and all(len(p["samples"]) == 3 for p in per_problem)


def test_report_shows_the_runs_evaluation(tmp_path):
    from r1zero.report import write_report
    from tests.test_report import write_run

    run = tmp_path / "run"
    write_run(run, 0.5, wait_step=2)
    (run / "eval").mkdir()
    results = {"eval/greedy_accuracy": 0.25, "eval/sampled_accuracy": 0.5, "eval/pass@1_ci_low": 0.4,
               "eval/pass@1_ci_high": 0.6, "eval/pass@4": 0.9, "eval/maj@4": 0.7, "eval/maj@4_ci_low": 0.6,
               "eval/maj@4_ci_high": 0.8}
    (run / "eval" / "eval.json").write_text(json.dumps({
        "command": "r1zero eval --model x", "evaluation": {"ks": [1, 4], "samples": 4, "best_of": []},
        "results": {"x [dialogue]": results}}))
    write_report([run])
    text = (run / "report.md").read_text()
    assert "## r1zero eval" in text and "| pass@4 | 0.900 |" in text and "| maj@4 | 0.700 [0.600, 0.800] |" in text


def test_a_chunk_counts_only_when_all_its_rows_are_saved_once(tmp_path):
    from r1zero.eval_run import _done_chunks

    path = tmp_path / "eval_samples.jsonl"
    row = lambda v, c, i: json.dumps({"variant": v, "chunk": c, "id": f"p{i}", "correct": [True]})
    lines = [row("a", 0, 0), row("a", 0, 1), row("a", 1, 2), row("a", 0, 1), row("b", 0, 0), row("b", 0, 1)]
    path.write_text("\n".join(lines) + '\n{"variant": "b", "chu')  # chunk a/1 lacks a row; a torn last line
    assert _done_chunks(path, [2, 2]) == {("a", 0), ("b", 0)}
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["variant"], r["chunk"], r["id"]) for r in kept) == [("a", 0, "p0"), ("a", 0, "p1"), ("b", 0, "p0"),
                                                                         ("b", 0, "p1")]  # once each


@pytest.mark.parametrize("extra, message", [
    (["--limit", "0"], "--limit must be at least 1"),
    (["--compare", str(BASE)], "--compare needs two models or more"),
    (["--template", ","], "--template names no template"),
    (["--template", "nope"], "is neither a known template"),
    (["--best-of", "nope"], "evaluation.best_of: unknown reward"),
    (["--k", "0,2"], "evaluation.ks"),
])
def test_bad_requests_are_named_before_anything_is_written(extra, message, tmp_path, capsys):
    i = EVAL_ARGS.index("--limit")
    args = EVAL_ARGS[:i] + EVAL_ARGS[i + 2:]  # without --limit 12
    model = [] if "--compare" in extra else ["--model", str(BASE)]
    assert main(["eval", *model, "--n", "2", "--out", str(tmp_path / "ev"), *args, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()
