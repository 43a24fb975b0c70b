"""Run reports: the start-vs-end summary and the emergence plots of one run, or of several overlaid
(the real run against its controls), rebuilt from a run directory's logs alone:

    metrics.jsonl           one row per step: rollout statistics, held-out evaluation every eval_every
    completions.jsonl       the logged rollout completions (first appearance of reflective words)
    eval_completions.jsonl  every held-out example at every evaluation (per-prompt learning curves)

`write_report` writes report.md, emergence.json and plots/*.png; `r1zero report` calls it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import math
from pathlib import Path
from typing import Any

import numpy as np

from r1zero.errors import MissingFileError, UserError
from r1zero.metrics import REFLECTIVE_WORDS, read_jsonl, self_check

# (label, metrics key) of the summary table: held-out evaluation at the start (the epoch-0 audit) and end.
SUMMARY_ROWS = (
    ("held-out accuracy, greedy", "eval/greedy_accuracy"),
    ("held-out accuracy, sampled", "eval/sampled_accuracy"),
    ("format rate", "eval/sampled_format"),
    ("mean length, correct (tokens)", "eval/sampled_length_correct"),
    ("mean length, incorrect (tokens)", "eval/sampled_length_incorrect"),
    ("mean length, all (tokens)", "eval/sampled_length"),
    ("step-by-step share", "eval/sampled_step_by_step"),
    ("step-by-step share, greedy", "eval/greedy_step_by_step"),
    ("reflective-word rate", "eval/sampled_reflective"),
    ("accuracy when step by step", "eval/sampled_accuracy_step_by_step"),
    ("accuracy when answering directly", "eval/sampled_accuracy_direct"),
    ("check rate (the working checks its answer)", "eval/sampled_self_check/check_rate"),
    ("accuracy with a check", "eval/sampled_self_check/accuracy_checked"),
    ("accuracy without a check", "eval/sampled_self_check/accuracy_unchecked"),
    ("self-corrections wrong->right (per completion)", "eval/sampled_self_check/wrong_to_right"),
    ("self-corrections right->wrong (per completion)", "eval/sampled_self_check/right_to_wrong"),
    ("check false alarms (rejects a right answer)", "eval/sampled_self_check/check_false_alarm"),
    ("exact checks (every step and the verdict right)", "eval/sampled_self_check/check_exact"),
)
EVAL_KEY = "eval/greedy_accuracy"  # present in every evaluation row


@dataclasses.dataclass
class Run:
    name: str
    dir: Path
    metrics: list[dict]
    completions: list[dict]
    evals: list[dict]

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the rows that hold a finite `key`."""
        pts = [(r["step"], r[key]) for r in self.metrics if isinstance(r.get(key), (int, float))
               and math.isfinite(r[key])]
        return np.asarray([p[0] for p in pts]), np.asarray([p[1] for p in pts], np.float64)

    def eval_rows(self) -> list[dict]:
        return [r for r in self.metrics if EVAL_KEY in r]

    @property
    def start(self) -> dict:
        rows = self.eval_rows()
        return rows[0] if rows else {}

    @property
    def end(self) -> dict:
        rows = self.eval_rows()
        return rows[-1] if rows else {}


def _read_jsonl(path: Path, required: bool) -> list[dict]:
    if not path.is_file():
        if required:
            raise MissingFileError(f"{path} does not exist: is {path.parent} a run directory?")
        return []
    return read_jsonl(path)


def load_run(workdir: str | Path, name: str | None = None) -> Run:
    d = Path(workdir)
    metrics = _read_jsonl(d / "metrics.jsonl", required=True)
    if not any(EVAL_KEY in r for r in metrics):
        raise UserError(f"{d / 'metrics.jsonl'} holds no held-out evaluation row ({EVAL_KEY})")
    return Run(name or d.name, d, metrics, _read_jsonl(d / "completions.jsonl", False),
               _read_jsonl(d / "eval_completions.jsonl", False))


# ---------------------------------------------------------------------------------------------------
# Numbers.


def summary_table(runs: list[Run]) -> str:
    """Markdown: one row per SUMMARY_ROWS entry, a start and an end column per run."""
    head = "| | " + " | ".join(f"{r.name} start | {r.name} end (step {r.end.get('step')})" for r in runs) + " |"
    lines = [head, "|---" * (1 + 2 * len(runs)) + "|"]
    for label, key in SUMMARY_ROWS:
        if not any(key in r.start for r in runs):
            continue
        cells = [_fmt(r.start.get(key)) + " | " + _fmt(r.end.get(key)) for r in runs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"


def first_solved(run: Run) -> dict[str, int | None]:
    """For each held-out example: the first evaluation step at which greedy decoding solves it
    (0: the base already did), None if never."""
    out: dict[str, int | None] = {}
    for r in sorted(run.evals, key=lambda r: r["step"]):
        out.setdefault(r["id"], None)
        if r.get("greedy_correct") and out[r["id"]] is None:
            out[r["id"]] = r["step"]
    return out


def solved_curve(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eval steps, share of held-out examples solved by then at least once, share solved at that
    step): how learning spreads over prompts."""
    firsts = first_solved(run)
    steps = np.asarray(sorted({r["step"] for r in run.evals}))
    if not firsts:
        return steps, np.zeros(len(steps)), np.zeros(len(steps))
    ever = np.asarray([np.mean([f is not None and f <= s for f in firsts.values()]) for s in steps])
    now = np.asarray([np.mean([bool(r.get("greedy_correct")) for r in run.evals if r["step"] == s]) for s in steps])
    return steps, ever, now


def reflective_first_steps(run: Run, threshold: float = 0.05) -> dict[str, dict[str, int | None]]:
    """Per reflective word: the first step a logged rollout completion uses it, and the first step
    its rate over the whole rollout reaches `threshold`."""
    import re

    out = {}
    for w in REFLECTIVE_WORDS:
        pattern = re.compile(rf"\b{w}\b", re.IGNORECASE)
        seen = next((r["step"] for r in run.completions if pattern.search(r.get("completion") or "")), None)
        steps, rate = run.series(f"reflect/{w}")
        above = steps[rate >= threshold]
        out[w] = {"first_seen": seen, f"first_rate_{threshold:g}": int(above[0]) if len(above) else None}
    return out


def emergence(run: Run) -> dict[str, Any]:
    firsts = first_solved(run)
    solved = [f for f in firsts.values() if f is not None]
    start_ok = {r["id"] for r in run.evals if r["step"] == run.start.get("step") and r.get("greedy_correct")}
    end_ok = {r["id"] for r in run.evals if r["step"] == run.end.get("step") and r.get("greedy_correct")}
    return {
        "run": str(run.dir), "start": run.start, "end": run.end,
        "held_out": {"examples": len(firsts), "solved_at_start": len(start_ok), "solved_at_end": len(end_ok),
                     "ever_solved": len(solved), "newly_solved": len(end_ok - start_ok),
                     "forgotten": len(start_ok - end_ok), "first_solved": firsts},
        "reflective_words": reflective_first_steps(run),
        "aha": aha_moment(run),
    }


CORRECTIONS = ("wrong_to_right", "right_to_wrong", "wrong_to_wrong")


def _rows_per_step(run: Run) -> int:
    """Completions per rollout, from the run's config.json (1 if it cannot be read)."""
    try:
        config = json.loads((run.dir / "config.json").read_text())
        return max(1, int(config["prompts_per_rollout"]) * int(config["sampling"]["num_samples"]))
    except (OSError, ValueError, KeyError, TypeError):
        return 1


def aha_moment(run: Run) -> dict[str, Any] | None:
    """When self-correction took off in the rollouts, and what it paid.

    The self-correction rate is the share of completions whose check rejects the stated answer and
    whose final answer differs (wrong->right + right->wrong + wrong->wrong). Its epoch-0 level is its
    mean over the first window of steps (w = 5% of the steps, at least 1: the base's own rollouts and
    the first updates); the aha step is the first step after that window where its trailing w-step
    mean exceeds the epoch-0 level by three binomial standard errors while wrong->right outnumbers
    right->wrong (corrections that pay); None if it never does. `share_of_gain` is the rise of net
    corrections (wrong->right minus right->wrong per completion) over the rise of rollout accuracy,
    first window to last: the part of the accuracy gain the corrections explain (negative when they
    fell while accuracy rose); None unless accuracy rose by more than two standard errors."""
    series = {k: dict(zip(*run.series(f"self_check/{k}"))) for k in CORRECTIONS}
    series["accuracy"] = dict(zip(*run.series("accuracy")))
    steps = np.asarray(sorted(set.intersection(*(set(v) for v in series.values()))))
    if len(steps) == 0:
        return None
    y = {k: np.asarray([v[s] for s in steps]) for k, v in series.items()}
    corr = y["wrong_to_right"] + y["right_to_wrong"] + y["wrong_to_wrong"]
    net = y["wrong_to_right"] - y["right_to_wrong"]
    w = max(1, len(steps) // 20)
    trailing = lambda v: np.convolve(v, np.ones(w) / w, mode="valid")  # [i] = mean of steps i .. i+w-1
    n = _rows_per_step(run) * w
    base = float(corr[:w].mean())
    threshold = base + 3 * math.sqrt(max(base, 1 / n) * (1 - min(base, 1 - 1 / n)) / n)
    up = (trailing(corr) > threshold) & (trailing(y["wrong_to_right"]) > trailing(y["right_to_wrong"]))
    up[:1] = False  # the first window is the baseline itself
    hits = np.flatnonzero(up)
    start, end = lambda v: float(v[:w].mean()), lambda v: float(v[-w:].mean())
    gain = end(y["accuracy"]) - start(y["accuracy"])
    se = lambda p: p * (1 - p) / n
    significant = gain > 2 * math.sqrt(se(start(y["accuracy"])) + se(end(y["accuracy"])))
    return {"step": int(steps[hits[0] + w - 1]) if len(hits) else None, "window_steps": w, "threshold": threshold,
            "self_correction_start": base, "self_correction_end": end(corr),
            "wrong_to_right_start": start(y["wrong_to_right"]), "wrong_to_right_end": end(y["wrong_to_right"]),
            "right_to_wrong_start": start(y["right_to_wrong"]), "right_to_wrong_end": end(y["right_to_wrong"]),
            "accuracy_start": start(y["accuracy"]), "accuracy_end": end(y["accuracy"]),
            "net_correction_gain": end(net) - start(net), "accuracy_gain": gain,
            "share_of_gain": (end(net) - start(net)) / gain if significant else None}


def aha_examples(run: Run, step: int | None, n: int = 2) -> dict[str, list[dict]]:
    """Logged rollout completions, each from a different prompt: `n` from the first logged step
    (before), `n` wrong->right corrections from `step` on (after; none without an aha step) and `n`
    from the last logged step."""
    if not run.completions:
        return {"before": [], "after": [], "last": []}
    first = min(r["step"] for r in run.completions)
    fixed = [r for r in run.completions if step is not None and r["step"] >= step
             and self_check(r.get("completion") or "", str(r.get("answer", ""))).event == "wrong->right"]
    last = max(r["step"] for r in run.completions)
    at = lambda s: [r for r in run.completions if r["step"] == s]
    return {"before": _one_per_prompt(at(first), n), "after": _one_per_prompt(fixed, n),
            "last": _one_per_prompt(at(last), n)}


def _one_per_prompt(rows: list[dict], n: int) -> list[dict]:
    """The first `n` rows with distinct (step, prompt): a group's G samples often read alike."""
    seen, out = set(), []
    for r in rows:
        key = (r["step"], r.get("prompt"))
        if key not in seen and len(out) < n:
            seen.add(key)
            out.append(r)
    return out


def aha_table(runs: list[Run]) -> str:
    """Markdown, one row per run: the held-out check rate, self-corrections wrong->right and sampled
    accuracy at the start and the end, the rollouts' aha step and the share of the accuracy gain net
    corrections explain, "(harm undone)" where all of it is fewer right->wrong (the priming grid's table:
    `r1zero report` over its runs)."""
    head = ("| run | check rate | wrong->right | right->wrong | accuracy | accuracy with / without a check (end) "
            "| aha step | share of gain |")
    lines = [head, "|---" * 8 + "|"]
    for r in runs:
        aha = aha_moment(r) or {}
        key = lambda k: f"eval/sampled_self_check/{k}"
        span = lambda k: f"{_fmt(r.start.get(k))} -> {_fmt(r.end.get(k))}"
        share = aha.get("share_of_gain")
        undone = share is not None and share > 0 and aha["wrong_to_right_end"] <= aha["wrong_to_right_start"]
        lines.append(f"| {r.name} | {span(key('check_rate'))} | {span(key('wrong_to_right'))} | "
                     f"{span(key('right_to_wrong'))} | {span('eval/sampled_accuracy')} | "
                     f"{_fmt(r.end.get(key('accuracy_checked')))} / {_fmt(r.end.get(key('accuracy_unchecked')))} | "
                     f"{aha.get('step') if aha.get('step') is not None else '-'} | "
                     f"{f'{share:.0%}' if share is not None else '-'}{' (harm undone)' if undone else ''} |")
    return "\n".join(lines)


def _share_words(share: float | None, more_fixes: bool = True) -> str:
    """`more_fixes`: wrong->right rose; when it did not, a positive share is harm undone (fewer
    right->wrong), not self-correction grown."""
    if share is None:
        return ""
    if share < 0:
        return f"; net corrections fell while accuracy rose (share of the gain {share:.0%})"
    why = "" if more_fixes or share == 0 else ", all from fewer right->wrong (checks that broke right answers), none from more wrong->right"
    return f"; net corrections explain {share:.0%} of the accuracy gain{why}"


def _aha_lines(run: Run, aha: dict[str, Any] | None) -> list[str]:
    if aha is None:
        return []
    pct = lambda v: f"{v:.3f}"
    when = (f"rises above its epoch-0 level at **step {aha['step']}**" if aha["step"] is not None else
            "never rises three standard errors above its epoch-0 level")
    lines = [f"- self-correction (a check rejects the answer and it changes; rollouts, {aha['window_steps']}-step "
             f"windows) {when}: {pct(aha['self_correction_start'])} -> {pct(aha['self_correction_end'])} per completion; "
             f"wrong->right {pct(aha['wrong_to_right_start'])} -> {pct(aha['wrong_to_right_end'])}, right->wrong "
             f"{pct(aha['right_to_wrong_start'])} -> {pct(aha['right_to_wrong_end'])}; rollout accuracy "
             f"{pct(aha['accuracy_start'])} -> {pct(aha['accuracy_end'])}"
             + _share_words(aha["share_of_gain"], aha["wrong_to_right_end"] > aha["wrong_to_right_start"])]
    examples = aha_examples(run, aha["step"])
    after = (("after (wrong->right corrections from the aha step on)", examples["after"]) if examples["after"]
             else ("after (the last logged step)", examples["last"]))
    for label, rows in (("before (the first logged step)", examples["before"]), after):
        if rows:
            lines += ["", f"Example completions, {label}:", ""]
            for r in rows:
                verdict = "right" if r.get("correct") else "wrong"
                lines += [f"    step {r['step']}, gold {r.get('answer')}, completion {verdict}: "
                          f"{(r.get('prompt') or '').strip()} {(r.get('completion') or '').strip()}"]
    return lines


# ---------------------------------------------------------------------------------------------------
# Plots.


def _smooth(y: np.ndarray) -> np.ndarray:
    w = max(1, len(y) // 25)
    if w == 1:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    head = c[1:w] / np.arange(1, w)
    return np.concatenate([head, (c[w:] - c[:-w]) / w])


# (file, title, y label, [(metrics key, line label suffix, style)]); rollout keys are smoothed.
PANELS = (
    ("accuracy", "Held-out accuracy", "accuracy",
     [("eval/greedy_accuracy", "greedy, held out", "-o"), ("eval/sampled_accuracy", "sampled, held out", "--s"),
      ("accuracy", "rollouts", ":")]),
    ("length", "Completion length", "tokens",
     [("length", "rollouts", "-"), ("length_correct", "correct", "--"), ("length_incorrect", "incorrect", ":")]),
    ("step_by_step", "Completions that work step by step", "share",
     [("step_by_step", "rollouts", "-"), ("eval/greedy_step_by_step", "greedy, held out", "--o")]),
    ("reflective", "Completions with a reflective word", "share",
     [("reflective", "rollouts", "-"), ("reflective_correct", "correct", "--"),
      ("reflective_incorrect", "incorrect", ":")]),
    ("format", "Format (<think>...</think> <answer>...</answer>)", "share",
     [("format", "rollouts", "-"), ("eval/sampled_format", "sampled, held out", "--o")]),
    ("self_check", "Completions that check their answer", "share",
     [("self_check/check_rate", "rollouts", "-"), ("self_check/check_rate_correct", "correct", "--"),
      ("self_check/check_rate_incorrect", "incorrect", ":"), ("eval/greedy_self_check/check_rate", "greedy, held out", "-o"),
      ("self_check/check_exact", "exact (of checks)", "-.")]),
    ("self_correction", "Self-corrections (a check rejects, the answer changes)", "per completion",
     [("self_check/wrong_to_right", "wrong->right", "-"), ("self_check/right_to_wrong", "right->wrong", "--"),
      ("self_check/wrong_to_wrong", "wrong->wrong", ":")]),
)


def plot_runs(runs: list[Run], out_dir: str | Path) -> list[Path]:
    """One PNG per panel, every run overlaid (a colour per run), plus first_solved.png,
    reflective_words.png (the first run's words) and overview.png (all panels on one page)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    written = []
    aha_steps = [(aha_moment(r) or {}).get("step") for r in runs]

    def draw(ax, panel):
        _, title, ylabel, lines = panel
        for i, run in enumerate(runs):
            for key, label, style in lines:
                x, y = run.series(key)
                if len(x) == 0:
                    continue
                y = y if key.startswith("eval/") else _smooth(y)
                ax.plot(x, y, style, color=colors[i % len(colors)], markersize=3, linewidth=1.2,
                        label=f"{run.name}: {label}" if len(runs) > 1 else label)
        for i, step in enumerate(aha_steps):
            if step is not None and panel[0] in ("self_check", "self_correction"):
                ax.axvline(step, color=colors[i % len(colors)], linestyle="-.", alpha=0.6,
                           label=f"{runs[i].name}: aha step" if len(runs) > 1 else "aha step")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a run that logged none of the panel's metrics draws nothing
            ax.legend(fontsize=6)

    def draw_solved(ax):
        for i, run in enumerate(runs):
            steps, ever, now = solved_curve(run)
            prefix = f"{run.name}: " if len(runs) > 1 else ""
            ax.plot(steps, ever, "-o", color=colors[i % len(colors)], markersize=3, label=prefix + "solved at least once")
            ax.plot(steps, now, "--", color=colors[i % len(colors)], label=prefix + "solved at that step")
        ax.set_title("Held-out prompts solved (greedy)", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("share of prompts")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)

    for panel in PANELS:
        fig, ax = plt.subplots(figsize=(6, 4))
        draw(ax, panel)
        written.append(_save(fig, out / f"{panel[0]}.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    draw_solved(ax)
    written.append(_save(fig, out / "first_solved.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for w in REFLECTIVE_WORDS:
        x, y = runs[0].series(f"reflect/{w}")
        if len(x) and y.max() > 0:
            ax.plot(x, _smooth(y), label=w)
    ax.set_title(f"Reflective words in rollouts ({runs[0].name})", fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("share of completions")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    written.append(_save(fig, out / "reflective_words.png"))

    fig, axes = plt.subplots(3, 3, figsize=(16, 13))
    for ax, panel in zip(axes.flat, PANELS):
        draw(ax, panel)
    draw_solved(axes.flat[len(PANELS)])
    for ax in axes.flat[len(PANELS) + 1:]:
        ax.axis("off")
    fig.suptitle(" vs ".join(r.name for r in runs))
    written.append(_save(fig, out / "overview.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------


def _eval_section(run_dir: Path, out: Path) -> list[str]:
    """The run's `r1zero eval` (RUN/eval/eval.json, e.g. the base against the trained model with
    pass@k curves), if it has one."""
    path = run_dir / "eval" / "eval.json"
    if not path.is_file():
        return []
    from r1zero.errors import read_json
    from r1zero.eval_run import table

    try:
        report = read_json(path)
        body = table(report)
    except Exception as e:  # noqa: BLE001 - a damaged eval.json must not cost the run's report
        logging.getLogger("r1zero.report").warning("%s: not shown in the report (%s)", path, e)
        return []
    lines = ["## r1zero eval", "", f"`{report.get('command', '')}`", "", body, ""]
    if (run_dir / "eval" / "pass_at_k.png").is_file():
        rel = os.path.relpath(run_dir / "eval" / "pass_at_k.png", out)
        lines += [f"![pass@k]({rel})", ""]
    return lines


def write_report(workdirs: list[str | Path], out_dir: str | Path | None = None,
                 names: list[str] | None = None) -> dict[str, Any]:
    """Loads the runs, writes OUT/report.md (the summary table and first appearances),
    OUT/emergence.json and OUT/plots/*.png; OUT defaults to the first run's directory (one run)
    or its compare/ subdirectory (several). Returns {"table", "files", "out"}."""
    runs = [load_run(d, n) for d, n in zip(workdirs, names or [None] * len(workdirs))]
    if len({r.name for r in runs}) < len(runs):  # same directory names: tell them apart by path
        runs = [dataclasses.replace(r, name=str(r.dir)) for r in runs]
    out = Path(out_dir) if out_dir else (runs[0].dir if len(runs) == 1 else runs[0].dir / "compare")
    out.mkdir(parents=True, exist_ok=True)
    files = plot_runs(runs, out / "plots")
    facts = {r.name: emergence(r) for r in runs}
    (out / "emergence.json").write_text(json.dumps(facts, indent=1) + "\n")
    table = summary_table(runs)
    lines = ["# " + " vs ".join(r.name for r in runs), "", "Held-out evaluation before RL (start: the epoch-0 "
             "audit) and at the last evaluation (end).", "", table, ""]
    for r in runs:
        h = facts[r.name]["held_out"]
        lines += [f"## {r.name}", "",
                  f"- held-out prompts solved (greedy): {h['solved_at_start']} of {h['examples']} at the start, "
                  f"{h['solved_at_end']} at the end; {h['newly_solved']} newly solved, {h['forgotten']} forgotten, "
                  f"{h['ever_solved']} solved at some evaluation"]
        firsts = {w: v for w, v in facts[r.name]["reflective_words"].items() if v["first_seen"] is not None}
        if firsts:
            lines.append("- first appearance of reflective words in logged rollouts (step; step its rate "
                         "reached 5%): " + ", ".join(f"{w} {v['first_seen']}; {v['first_rate_0.05']}"
                                                     for w, v in firsts.items()))
        lines += _aha_lines(r, facts[r.name]["aha"])
        lines.append("")
    if any(facts[r.name]["aha"] is not None for r in runs):
        lines += ["## Self-correction (held-out, sampled; aha step and share of gain from the rollouts)", "",
                  aha_table(runs), ""]
    lines += ["Plots: " + ", ".join(f"[{f.name}](plots/{f.name})" for f in files), ""]
    lines += _eval_section(runs[0].dir, out) if len(runs) == 1 else []
    (out / "report.md").write_text("\n".join(lines))
    return {"table": table, "files": files + [out / "report.md", out / "emergence.json"], "out": out}
