"""`r1zero eval`: models on a task's held-out problems, n samples each, through r1zero.evaluate.

A model is a Hugging Face directory, a Hub id, or a run directory (its newest usable checkpoint, or
RUN@STEP). Every (model, template, thinking budget) is a *variant*; each is evaluated on the same
problems with the same seed, in chunks of `evaluation.batch_problems` problems. A finished chunk is
appended to OUT/eval_samples.jsonl at once, so an interrupted evaluation resumes where it stopped
(OUT/request.json says what was asked; another request in the same OUT is refused). At the end:
OUT/eval.json (every metric, the command, the models with their revision or step) and, comparing
models, their pass@k curves (OUT/pass_at_k.png), the crossover k and the problems only one solves.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from r1zero.config import TrainConfig, to_dict
from r1zero.errors import MissingFileError, UserError, read_json
from r1zero.evaluate import eval_rows, pass_at_k, summarize


@dataclasses.dataclass(frozen=True)
class Variant:
    model: str  # as given on the command line
    template: str
    min_think: int = 0
    max_think: int = 0

    @property
    def label(self) -> str:
        budget = f" think>={self.min_think}" if self.min_think else ""
        budget += f" think<={self.max_think}" if self.max_think else ""
        return f"{self.model} [{self.template}]{budget}"


def is_run(spec: str) -> bool:
    return (Path(spec.split("@", 1)[0]) / "config.json").is_file() and (
        Path(spec.split("@", 1)[0]) / "checkpoints").is_dir()


def load_model(spec: str, mesh=None):
    """(model, tokenizer, the run's config or None, what was loaded: path, revision, step)."""
    from r1zero.models import hf, hub
    from r1zero.tokenizer import Tokenizer

    if is_run(spec):
        from r1zero.train import load_run_model

        workdir, _, step = spec.partition("@")
        if step and not step.isdigit():
            raise UserError(f"--model {spec}: the step after @ must be a number")
        model, tok, config, got = load_run_model(workdir, int(step) if step else None)
        return model, tok, config, {"run": workdir, "step": got}
    source = hub.resolve(spec)
    model, _ = hf.load_model(source.path, mesh)
    return model, Tokenizer(source.path), None, {"path": str(source.path), "revision": source.revision}


def base_config(models: Sequence[str], task: str | None, overrides: Sequence[str]) -> TrainConfig:
    """The task and sampling settings: the first run's config if a model is a run, else `--task`
    with default sampling; then the --set overrides."""
    from r1zero.config import TaskConfig, apply_overrides
    from r1zero.train import load_run_config

    run = next((m for m in models if is_run(m)), None)
    config = load_run_config(run.split("@", 1)[0]) if run else TrainConfig()
    if task:
        config = dataclasses.replace(config, task=dataclasses.replace(config.task, dataset=task))
    elif not run:
        raise UserError("--task is needed when no model is a run directory (e.g. --task gsm8k)")
    if not run:  # a code dataset is scored by running its programs
        accuracy = "code" if config.task.dataset in ("humaneval", "code") else "exact_match"
        config = dataclasses.replace(config, task=TaskConfig(dataset=config.task.dataset, rewards=(accuracy,),
                                                             accuracy_reward=accuracy))
    return apply_overrides(config, list(overrides))


def problems(config: TrainConfig, data_dir: Path, limit: int | None) -> list[dict]:
    """The held-out split's examples (question, answer, id), the first `limit` of them."""
    from r1zero.data import load_task

    task = dataclasses.replace(config.task, template="plain")  # each variant renders its own template
    _, held_out = load_task(task, config.seed, data_dir, 1, train=False)
    return held_out[:limit] if limit else held_out


def run_eval(models: Sequence[str], config: TrainConfig, templates: Sequence[str], budgets: Sequence[tuple[int, int]],
             out: Path, limit: int | None = None, command: str = "", progress: bool = True) -> dict:
    """Evaluates every variant (model x template x budget) into `out`; returns eval.json's content."""
    from r1zero.train import RunLock

    variants = [Variant(m, t, lo, hi) for m in models for t in templates for lo, hi in budgets]
    twice = sorted({v.label for v in variants if [w.label for w in variants].count(v.label) > 1})
    if twice:
        raise UserError(f"the same model, template and budget twice: {', '.join(twice)}")
    request = {"models": list(models), "templates": list(templates), "budgets": [list(b) for b in budgets],
               "limit": limit, "config": json.loads(json.dumps(to_dict(config)))}
    check(models, config, templates)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    with RunLock(out):  # one evaluation per directory at a time
        samples_path = _start(out, request)
        examples = problems(config, out / "data", limit)
        if not examples:
            raise UserError(f"task {config.task.dataset!r} split {config.task.eval_split!r} has no problems")
        size = config.evaluation.batch_problems or len(examples)
        chunks = [examples[i:i + size] for i in range(0, len(examples), size)]
        done = _done_chunks(samples_path, [len(c) for c in chunks])
        _evaluate(variants, chunks, done, config, samples_path, progress)
        return _write_results(out, variants, config, command, len(chunks))


def check(models: Sequence[str], config: TrainConfig, templates: Sequence[str]) -> None:
    """What can be checked before anything is written: the rewards and task, the templates, and
    that every model is a model, a run or a Hub id."""
    from r1zero.data.templates import render
    from r1zero.models import hub
    from r1zero.train import check_config

    if not templates:
        raise UserError("--template names no template")
    for t in templates:
        if t != "chat":  # the chat template is the model's own: checked when it is loaded
            render(t, "x")
    check_config(dataclasses.replace(config, task=dataclasses.replace(config.task, template="plain")))
    for m in models:
        if not is_run(m) and not hub.is_hub_id(m) and not (Path(m) / "config.json").is_file():
            raise MissingFileError(f"--model {m}: not a model directory (no config.json), a run directory or a Hub id")


def _evaluate(variants: list[Variant], chunks: list[list[dict]], done: set, config: TrainConfig, samples_path: Path,
              progress: bool) -> None:
    from r1zero.data.templates import render
    from r1zero.train import stream_key

    key = stream_key(config.seed, "eval")
    loaded: dict[str, dict] = {}
    out = samples_path.parent
    bar = _bar(progress, len(variants) * len(chunks) - sum(1 for v in variants for c in range(len(chunks))
                                                            if (v.label, c) in done))
    for v in variants:
        if all((v.label, c) in done for c in range(len(chunks))):
            continue
        if v.model not in loaded:
            model, tok, _, what = load_model(v.model)
            loaded.clear()  # one model in memory at a time
            loaded[v.model] = {"model": model, "tok": tok, "what": what}
        m = loaded[v.model]
        vcfg = dataclasses.replace(config, evaluation=dataclasses.replace(
            config.evaluation, batch_problems=0, min_think_tokens=v.min_think, max_think_tokens=v.max_think))
        tokdir = m["tok"].path.parent
        for c, chunk in enumerate(chunks):
            if (v.label, c) in done:
                continue
            templated = [{**ex, "prompt": render(v.template, ex["question"], tokdir)} for ex in chunk]
            rows = eval_rows(m["model"], m["tok"], templated, vcfg, jax.random.fold_in(key, c))
            with open(samples_path, "a") as f:
                f.write("".join(json.dumps({"variant": v.label, "chunk": c, **r}) + "\n" for r in rows))
            bar.update(1)
        (out / f"model-{_slug(v.model)}.json").write_text(json.dumps(m["what"], indent=1) + "\n")
    bar.close()


def _start(out: Path, request: dict) -> Path:
    path = out / "request.json"
    if not path.is_file() and (out / "eval_samples.jsonl").is_file():
        raise UserError(f"{out} holds samples but no request.json saying what they are; use another --out, "
                        f"or delete it to start over")
    if path.is_file():
        before = read_json(path)
        if before != request:
            changed = sorted(k for k in set(before) | set(request) if before.get(k) != request.get(k))
            raise UserError(f"{out} holds another evaluation (changed: {', '.join(changed)}); use another --out, "
                            f"or delete it to start over")
    else:
        path.write_text(json.dumps(request, indent=1) + "\n")
    return out / "eval_samples.jsonl"


def _done_chunks(path: Path, sizes: list[int]) -> set[tuple[str, int]]:
    """(variant, chunk) whose rows are all in the samples file. The file is rewritten with those
    rows only (once each): a chunk cut short by a kill or a full disk, or a torn last line, is redone."""
    if not path.is_file():
        return set()
    rows: dict[tuple[str, int], dict[str, str]] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
            rows.setdefault((row["variant"], int(row["chunk"])), {}).setdefault(str(row["id"]), line)
        except (ValueError, KeyError, TypeError):
            continue
    done = {key for key, got in rows.items() if 0 <= key[1] < len(sizes) and len(got) == sizes[key[1]]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for key in sorted(done) for line in rows[key].values()))
    tmp.replace(path)
    return done


def _rows_of(path: Path, label: str) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted((r for r in rows if r["variant"] == label), key=lambda r: r["chunk"])


def _write_results(out: Path, variants: list[Variant], config: TrainConfig, command: str, chunks: int) -> dict:
    results, curves, solved = {}, {}, {}
    n = config.evaluation.samples
    for v in variants:
        rows = _rows_of(out / "eval_samples.jsonl", v.label)
        if len({r["chunk"] for r in rows}) != chunks:
            raise MissingFileError(f"{out}/eval_samples.jsonl lacks chunks of {v.label}")
        results[v.label] = summarize(rows, config)
        curves[v.label] = [float(np.mean([pass_at_k(n, sum(r["correct"]), k) for r in rows])) for k in range(1, n + 1)]
        solved[v.label] = {r["id"] for r in rows if any(r["correct"]) or (n == 0 and r.get("greedy_correct"))}
    report = {"command": command, "seed": config.seed, "task": json.loads(json.dumps(to_dict(config.task))),
              "evaluation": json.loads(json.dumps(to_dict(config.evaluation))),
              "models": {p.stem[len("model-"):]: read_json(p) for p in sorted(out.glob("model-*.json"))},
              "results": results, "pass_at_k_curve": curves}
    if len(variants) > 1:
        report["compare"] = compare(variants, curves, solved)
        if n:  # greedy only: no pass@k curve to draw
            plot_curves(curves, out / "pass_at_k.png")
    (out / "eval.json").write_text(json.dumps(_no_nan(report), indent=1) + "\n")
    return report


def compare(variants: list[Variant], curves: dict[str, list[float]], solved: dict[str, set]) -> dict:
    """The first variant (the base) against each other: which is ahead at k = 1, the smallest k at
    which a base that starts behind catches up (None: not within n), and the problems only one of
    the two solves in n samples (does RL expand what is solvable, or only sharpen it?)."""
    base = variants[0].label
    out = {}
    for v in variants[1:]:
        b, t = np.asarray(curves[base]), np.asarray(curves[v.label])
        if not len(b):  # greedy only: no pass@k curve
            b, t = np.asarray([len(solved[base])]), np.asarray([len(solved[v.label])])
        ahead = "tie" if b[0] == t[0] else "base" if b[0] > t[0] else "this"
        catch = np.flatnonzero(b >= t)
        out[v.label] = {"vs": base, "ahead_at_k1": ahead,
                        "crossover_k": int(catch[0]) + 1 if ahead == "this" and len(catch) else None,
                        "only_base_solves": sorted(solved[base] - solved[v.label]),
                        "only_this_solves": sorted(solved[v.label] - solved[base])}
    return out


def plot_curves(curves: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, marker="o" if len(curve) <= 16 else None, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("pass@k")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(report: dict) -> str:
    """The terminal table: a column per variant, a row per headline metric."""
    results = report["results"]
    labels = list(results)
    ev = report["evaluation"]
    rows = [("greedy accuracy", "eval/greedy_accuracy"), ("pass@1 (mean over samples)", "eval/sampled_accuracy")]
    rows += [(f"pass@{k}", f"eval/pass@{k}") for k in ev["ks"] if k != 1]
    rows += [(f"maj@{k}", f"eval/maj@{k}") for k in ev["ks"]]
    rows += [(f"best-of-{ev['samples']} by {r}", f"eval/best_of_{ev['samples']}/{r}") for r in ev["best_of"]]
    rows += [("format rate", "eval/sampled_format"), ("mean length, correct", "eval/sampled_length_correct"),
             ("mean length, incorrect", "eval/sampled_length_incorrect"), ("could not score", "eval/could_not_score")]
    fmt = lambda x: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
    intervals = {"eval/sampled_accuracy": "eval/pass@1_ci", **{f"eval/maj@{k}": f"eval/maj@{k}_ci" for k in ev["ks"]}}
    lines = ["| | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name, key in rows:
        if not any(key in results[lab] for lab in labels):
            continue
        cells = []
        for lab in labels:
            r, ci = results[lab], intervals.get(key, "")
            interval = f" [{fmt(r[ci + '_low'])}, {fmt(r[ci + '_high'])}]" if ci + "_low" in r else ""
            cells.append(fmt(r.get(key)) + interval)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for label, c in report.get("compare", {}).items():
        where = ("the base is ahead from k = 1" if c["ahead_at_k1"] == "base" else "level at k = 1"
                 if c["ahead_at_k1"] == "tie" else f"the base catches up at k = {c['crossover_k']}" if c["crossover_k"]
                 else "the base does not catch up within n")
        lines.append(f"{label} vs {c['vs']}: {where}; solved only by the base: {len(c['only_base_solves'])}, "
                     f"only by this: {len(c['only_this_solves'])}")
    return "\n".join(lines)


def _no_nan(x):
    """JSON without NaN (strict parsers reject it): None where a metric has no value."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_no_nan(v) for v in x]
    return x


def _slug(spec: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in spec.strip("/"))[-80:]


def _bar(enabled: bool, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="eval", unit="chunk", disable=not enabled)
