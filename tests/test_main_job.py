"""The main job, shortened: configs/default.py from the shipped base for a few steps writes every
promised file, its summary is the epoch-0 audit vs the end, and the notebook executes against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from r1zero.cli import main

ROOT = Path(__file__).parents[1]
PLOTS = ("accuracy", "length", "step_by_step", "reflective", "format", "first_solved", "reflective_words", "overview")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("main") / "default"
    argv = ["train", "--config", str(ROOT / "configs" / "default.py"), "--workdir", str(workdir), "--steps", "4",
            "--set", "eval_every=2", "--set", "task.eval_size=16", "--set", "prompts_per_rollout=4", "--no-progress"]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return workdir, out.getvalue()


@pytest.mark.slow
def test_main_job_writes_every_promised_file(run):
    workdir, printed = run
    for name in ("config.json", "metrics.jsonl", "completions.jsonl", "eval_completions.jsonl", "audit_epoch0.json",
                 "summary.json", "report.md", "emergence.json", "final/model.safetensors", "final/tokenizer.json"):
        assert (workdir / name).is_file(), name
    for name in PLOTS:
        assert (workdir / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG"), name
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    evals = [r for r in rows if "eval/greedy_accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    # The epoch-0 audit is the evaluation of the base before any update, with its completions.
    audit = json.loads((workdir / "audit_epoch0.json").read_text())
    assert audit["metrics"] == {k: v for k, v in evals[0].items() if k != "step"}
    assert audit["examples"] and {"greedy", "sampled", "greedy_correct"} <= set(audit["examples"][0])
    for key in ("eval/sampled_step_by_step", "eval/sampled_reflective", "eval/sampled_length_correct",
                "eval/sampled_format", "eval/sampled_accuracy_step_by_step"):
        assert key in evals[0]
    # Every held-out example at every evaluation, for per-prompt curves.
    ev = [json.loads(line) for line in (workdir / "eval_completions.jsonl").read_text().splitlines()]
    assert len(ev) == 3 * 16 and {r["step"] for r in ev} == {0, 2, 4}
    # The printed summary is start (audit) vs end, for the quantities the issue names.
    for label in ("held-out accuracy, greedy", "format rate", "mean length, correct", "mean length, incorrect",
                  "step-by-step share", "reflective-word rate"):
        assert label in printed, label
    start = f"{evals[0]['eval/greedy_accuracy']:.3f} | {evals[-1]['eval/greedy_accuracy']:.3f}"
    assert f"| held-out accuracy, greedy | {start} |" in printed
    # Rollouts: prompts in the R1-Zero shape the base saw, rewards from accuracy and format.
    comp = [json.loads(line) for line in (workdir / "completions.jsonl").read_text().splitlines()]
    assert comp[0]["prompt"].startswith("User: ") and comp[0]["prompt"].endswith("=? Assistant:")
    assert {"reward/answer", "reward/format"} <= set(comp[0])


@pytest.mark.slow
def test_notebook_executes_top_to_bottom_against_the_run(run, tmp_path):
    workdir, _ = run
    nb = json.loads((ROOT / "notebooks" / "aha_moment.ipynb").read_text())
    assert nb["nbformat"] == 4
    source = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    script = tmp_path / "aha_moment.py"
    script.write_text(source)
    # The aha section runs against the same run: it logs the self-correction metrics too.
    env = {**os.environ, "R1ZERO_RUNS": str(workdir), "R1ZERO_AHA_RUNS": str(workdir), "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT / "notebooks", env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held-out accuracy, greedy" in result.stdout and "first appearance" in result.stdout
    import re

    assert re.search(rf"{workdir.name}: aha step (None|\d+); self-correction per completion \d\.\d{{3}} -> \d\.\d{{3}}",
                     result.stdout), result.stdout[-2000:]
