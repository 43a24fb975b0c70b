"""Every dataset builds a small split offline with the promised fields and difficulty."""

from __future__ import annotations

import json

import pytest

from r1zero.config import TaskConfig
from r1zero.errors import UserError
from r1zero.data.generators import generate
from r1zero.rewards.arith import evaluate


def test_digits():
    splits = generate(TaskConfig(dataset="digits", operation="max", difficulty=3, eval_size=100), seed=0)
    assert len(splits["train"]) == 900 and len(splits["test"]) == 100
    assert not {e["id"] for e in splits["train"]} & {e["id"] for e in splits["test"]}
    for ex in splits["train"][:50]:
        digits = [int(d) for d in ex["question"].split()[1:-1]]
        assert len(digits) == 3 and ex["answer"] == str(max(digits))


def test_multiply_holds_out_the_pairs_the_corpus_never_writes():
    from r1zero.data import corpus

    splits = generate(TaskConfig(dataset="multiply", difficulty=2, eval_size=100), seed=0)
    train, test = splits["train"], splits["test"]
    pairs = lambda rows: {(e["meta"]["a"], e["meta"]["b"]) for e in rows}
    assert len(test) == 100 and all(corpus.is_held_out(a, b) for a, b in pairs(test))
    assert not any(corpus.is_held_out(a, b) for a, b in pairs(train))
    held = sum(corpus.is_held_out(a, b) for a in range(10, 100) for b in range(10, 100))
    assert len(train) == 8100 - held
    for e in train[:50] + test[:50]:
        a, b = e["meta"]["a"], e["meta"]["b"]
        assert e["question"] == f"{a}*{b}=?" and e["answer"] == str(a * b)
    # The order of the train split follows the seed; the held-out choice does not.
    other = generate(TaskConfig(dataset="multiply", difficulty=2, eval_size=100), seed=1)
    assert [e["id"] for e in other["test"]] == [e["id"] for e in test]
    assert [e["id"] for e in other["train"]] != [e["id"] for e in train]


def test_multiply_with_two_factor_sizes():
    from r1zero.data import corpus

    splits = generate(TaskConfig(dataset="multiply", difficulty=3, difficulty_b=2, eval_size=64), seed=0)
    rows = splits["train"] + splits["test"]
    assert len(rows) == 900 * 90 - sum(corpus.is_held_out(a, b) for a in range(100, 1000) for b in range(10, 100)) + 64
    assert all(100 <= e["meta"]["a"] <= 999 and 10 <= e["meta"]["b"] <= 99 for e in rows)
    assert all(corpus.is_held_out(e["meta"]["a"], e["meta"]["b"]) for e in splits["test"])
    with pytest.raises(ValueError, match="task.eval_size must be between 1 and"):
        generate(TaskConfig(dataset="multiply", difficulty=2, eval_size=5000), seed=0)


@pytest.mark.parametrize("n", [3, 4])
def test_countdown_targets_are_reachable(n):
    cfg = TaskConfig(dataset="countdown", difficulty=n, max_number=50, max_target=200, train_size=60, eval_size=20)
    splits = generate(cfg, seed=1)
    assert len(splits["train"]) == 60 and len(splits["test"]) == 20
    keys = lambda rows: {(tuple(sorted(e["meta"]["numbers"])), e["meta"]["target"]) for e in rows}
    assert not keys(splits["train"]) & keys(splits["test"])
    for ex in splits["train"] + splits["test"]:
        numbers, target = ex["meta"]["numbers"], ex["meta"]["target"]
        assert len(numbers) == n and all(1 <= x <= 50 for x in numbers) and 1 <= target <= 200
        value, literals = evaluate(ex["meta"]["solution"])  # the witness uses each number once
        assert value == target and sorted(literals) == sorted(str(x) for x in numbers)
        assert str(numbers) in ex["question"] and str(target) in ex["question"]
    assert generate(cfg, seed=1) == splits and generate(cfg, seed=2) != splits


@pytest.mark.parametrize("operation, digits", [("add", 3), ("mul", 2), ("chain", 2)])
def test_arithmetic(operation, digits):
    splits = generate(TaskConfig(dataset="arithmetic", operation=operation, difficulty=digits,
                                 train_size=40, eval_size=10), seed=0)
    for ex in splits["train"]:
        expr = ex["question"].rstrip(" =")
        operands = [t for t in expr.split() if t.isdigit()]
        assert all(len(t) == digits for t in operands)
        assert int(ex["answer"]) == evaluate(expr)[0]
    assert not {e["question"] for e in splits["train"]} & {e["question"] for e in splits["test"]}


def test_gsm8k_splits_by_template():
    splits = generate(TaskConfig(dataset="gsm8k", train_size=30, eval_size=10), seed=0)
    test_templates = {e["meta"]["template"] for e in splits["test"]}
    train_templates = {e["meta"]["template"] for e in splits["train"]}
    assert len(splits["test"]) == 10 and len(test_templates) == 10  # the original problems
    assert len(splits["train"]) == 30 and not test_templates & train_templates
    for ex in splits["train"] + splits["test"]:
        assert ex["answer"] and "####" in ex["meta"]["solution"]
        float(ex["answer"])  # GSM8K answers are numbers


def test_gsm8k_from_manual_dir(tmp_path):
    rows = [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"}]
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    splits = generate(TaskConfig(dataset="gsm8k", path=str(tmp_path)), seed=0)
    assert splits["train"][0]["answer"] == "7"
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(ValueError, match=r"test.jsonl:1: the solution has no '#### answer' line"):
        generate(TaskConfig(dataset="gsm8k", path=str(tmp_path)), seed=0)


def test_math_local_files_and_champ(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "train.jsonl").write_text(json.dumps({"problem": "1+1?", "solution": "so \\boxed{2}"}) + "\n")
    pq.write_table(pa.Table.from_pylist([{"problem": "2+2?", "solution": "4", "answer": "4"}]), tmp_path / "test.parquet")
    splits = generate(TaskConfig(dataset="math", path=str(tmp_path)), seed=0)
    assert splits["train"][0]["answer"] == "2" and splits["test"][0]["answer"] == "4"
    assert len(splits["champ"]) == 270 and all(e["answer"] for e in splits["champ"])


def test_reasoning_gym_and_jsonl(tmp_path):
    splits = generate(TaskConfig(dataset="reasoning_gym:countdown", train_size=20, eval_size=5), seed=0)
    assert len(splits["test"]) == 5 and {"numbers", "target"} <= set(splits["train"][0]["meta"])
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"q": f"{i}+1", "a": str(i + 1)}) + "\n" for i in range(20)))
    splits = generate(TaskConfig(dataset="jsonl", path=str(tmp_path / "d.jsonl"), prompt_field="q",
                                 answer_field="a", eval_size=5), seed=0)
    assert len(splits["train"]) == 15 and splits["test"][0]["answer"] == str(int(splits["test"][0]["question"][:-2]) + 1)


@pytest.mark.parametrize("config, error, message", [
    (TaskConfig(dataset="gsm9k"), ValueError, r"unknown dataset 'gsm9k'; known: \['arithmetic', 'code', 'countdown'"),
    (TaskConfig(dataset="reasoning_gym:nope"), ValueError, "unknown reasoning_gym dataset 'nope'.*known: .*countdown"),
    (TaskConfig(dataset="digits", operation="median"), ValueError, "task.operation: unknown digits operation 'median'"),
    (TaskConfig(dataset="jsonl"), ValueError, "dataset 'jsonl' needs task.path"),
    (TaskConfig(dataset="jsonl", path="/nonexistent/x.jsonl"), FileNotFoundError, "/nonexistent/x.jsonl does not exist"),
    (TaskConfig(dataset="math", path="/nonexistent"), FileNotFoundError, "manual_dir /nonexistent does not exist"),
    (TaskConfig(dataset="gsm8k", path="/nonexistent"), FileNotFoundError, "/nonexistent/train.jsonl does not exist"),
])
def test_bad_configs_name_the_problem(config, error, message):
    with pytest.raises(error, match=message):
        generate(config, seed=0)


def test_bad_rows_name_file_and_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"prompt": "a", "answer": "b"}) + "\n" + json.dumps({"prompt": "c"}) + "\n")
    with pytest.raises(ValueError, match=r"d.jsonl:2: missing field\(s\) \['answer'\]"):
        generate(TaskConfig(dataset="jsonl", path=str(f), eval_size=1), seed=0)
    f.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"d.jsonl:1: not valid JSON"):
        generate(TaskConfig(dataset="jsonl", path=str(f), eval_size=1), seed=0)
    f.write_text("")
    with pytest.raises(ValueError, match="eval_size must be between"):  # an empty file
        generate(TaskConfig(dataset="jsonl", path=str(f), eval_size=1), seed=0)
    f.write_bytes(json.dumps({"prompt": "a", "answer": "b"}).encode() + b"\n" + b'{"prompt": "\xff\xfe", "answer": 1}\n')
    with pytest.raises(UserError, match=r"d.jsonl:2: not UTF-8 text"):
        generate(TaskConfig(dataset="jsonl", path=str(f), eval_size=1), seed=0)
    for bad, message in (({"prompt": 7, "answer": "b"}, "'prompt' must be non-empty text, got 7"),
                         ({"prompt": {"x": 1}, "answer": "b"}, "'prompt' must be non-empty text"),
                         ({"prompt": "a", "answer": [1, 2]}, "'answer' must be text or a number, got \\[1, 2\\]")):
        f.write_text(json.dumps({"prompt": "ok", "answer": 1}) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(UserError, match=r"d.jsonl:2: field " + message):
            generate(TaskConfig(dataset="jsonl", path=str(f), eval_size=1), seed=0)


def test_a_kind_of_problem_that_runs_out_is_an_error_not_a_hang():
    """One-digit additions: 100 distinct problems; asking for 5,000 used to loop forever."""
    import time

    t0 = time.perf_counter()
    with pytest.raises(UserError, match=r"task.train_size=5000: only 92 distinct problems of this kind"):
        generate(TaskConfig(dataset="arithmetic", operation="add", difficulty=1, eval_size=8, train_size=5000), seed=0)
    with pytest.raises(UserError, match=r"task.eval_size=500: only \d+ distinct problems"):
        generate(TaskConfig(dataset="countdown", difficulty=2, max_number=3, max_target=9, eval_size=500), seed=0)
    assert time.perf_counter() - t0 < 60
