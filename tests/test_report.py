"""`r1zero report` on small fixture runs written by hand: plots, summary, per-prompt and per-word facts."""

from __future__ import annotations

import json

from r1zero.cli import main
from r1zero.report import SUMMARY_ROWS

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(d, acc_end: float, wait_step: int | None):
    """Evaluations at steps 0, 5, 10 of prompts a-d; rollout rows at steps 1-10."""
    d.mkdir(parents=True)
    evals = {0: 0.25, 5: 0.5, 10: acc_end}
    rows = []
    for step in range(11):
        row = {"step": step}
        if step:
            row.update({"accuracy": 0.1 * step, "format": 0.5, "length": 10.0 + step, "length_correct": 12.0,
                        "length_incorrect": 8.0, "step_by_step": 0.05 * step, "reflective": 0.0,
                        "reflective_correct": 0.0, "reflective_incorrect": 0.0,
                        "reflect/wait": 0.1 if wait_step is not None and step >= wait_step + 1 else 0.0,
                        "reflect/check": 0.02})
        if step in evals:
            row.update({key: evals[step] + i / 100 for i, (_, key) in enumerate(SUMMARY_ROWS)})
            row["eval/greedy_accuracy"] = evals[step]
        rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    solved = {"a": (True, True, True), "b": (False, True, False), "c": (False, False, True), "d": (False,) * 3}
    evals_rows = [{"step": s, "id": k, "answer": "1", "greedy": "x", "greedy_correct": v[i], "sampled": "y",
                   "sampled_correct": False} for i, s in enumerate((0, 5, 10)) for k, v in solved.items()]
    (d / "eval_completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals_rows))
    comps = [{"step": s, "completion": "let me check" if s == 3 else ("wait, no" if s == wait_step else "4042")}
             for s in range(1, 11)]
    (d / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in comps))


def test_report_compares_runs_and_writes_every_plot(tmp_path, capsys):
    real, control = tmp_path / "real", tmp_path / "control"
    write_run(real, 0.75, wait_step=7)
    write_run(control, 0.125, wait_step=None)
    assert main(["report", "--workdir", str(real), "--compare", str(control)]) == 0
    out = capsys.readouterr().out
    assert "| held-out accuracy, greedy | 0.250 | 0.750 | 0.250 | 0.125 |" in out
    compare = real / "compare"
    names = {"accuracy", "length", "step_by_step", "reflective", "format", "first_solved", "reflective_words", "overview"}
    for name in names:
        data = (compare / "plots" / f"{name}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    report = (compare / "report.md").read_text()
    assert "# real vs control" in report and "wait 7; 8" in report and "check 3; None" in report
    facts = json.loads((compare / "emergence.json").read_text())
    held = facts["real"]["held_out"]
    assert held["first_solved"] == {"a": 0, "b": 5, "c": 10, "d": None}
    assert (held["solved_at_start"], held["solved_at_end"], held["newly_solved"], held["forgotten"]) == (1, 2, 1, 0)
    assert facts["real"]["reflective_words"]["wait"] == {"first_seen": 7, "first_rate_0.05": 8}
    assert facts["control"]["reflective_words"]["wait"]["first_seen"] is None


def test_report_of_one_run_writes_into_it_and_names_bad_input(tmp_path, capsys):
    run = tmp_path / "run"
    write_run(run, 0.5, wait_step=2)
    assert main(["report", "--workdir", str(run)]) == 0
    assert (run / "plots" / "overview.png").read_bytes().startswith(PNG) and (run / "report.md").is_file()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "lo')  # a last line cut short (a kill, a full disk) is left out
    assert main(["report", "--workdir", str(run)]) == 0
    with open(run / "metrics.jsonl", "a") as f:
        f.write('\n{"step": 12}\n')  # ... but a bad line with rows after it is an error
    assert main(["report", "--workdir", str(run)]) == 2
    assert "metrics.jsonl line 12: not a log row" in capsys.readouterr().err
    assert main(["report", "--workdir", str(tmp_path / "nothing")]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
