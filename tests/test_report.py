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


FIXED = ("User: 48*53=? Assistant: <think> 48*3=144 48*50=2370 144+2370=2514 check: 4+8=12 1+2=3 5+3=8 3*8=24 "
         "2+4=6 2+5+1+4=12 1+2=3 3 not 6 wait, 2514 is wrong, redo: 8*3=24 40*3=120 8*50=400 40*50=2000 24+120=144 "
         "144+400=544 544+2000=2544 </think> <answer> 2544 </answer>")


def write_aha_run(d, paying: bool):
    """40 rollout steps of 16 prompts x 8 samples; from step 20 self-corrections jump to 0.2 per
    completion, wrong->right when `paying`, right->wrong otherwise; accuracy follows."""
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"prompts_per_rollout": 16, "sampling": {"num_samples": 8}}))
    rows = []
    for step in range(41):
        row = {"step": step}
        if step:
            late = step >= 20
            row.update({"accuracy": 0.5 if late and paying else 0.3,
                        "self_check/wrong_to_right": 0.2 if late and paying else 0.02,
                        "self_check/right_to_wrong": 0.2 if late and not paying else 0.01,
                        "self_check/wrong_to_wrong": 0.0})
        if step % 20 == 0:
            end = step == 40
            row.update({"eval/greedy_accuracy": 0.3, "eval/sampled_accuracy": 0.5 if end and paying else 0.3,
                        "eval/sampled_self_check/check_rate": 0.6 if end else 0.2,
                        "eval/sampled_self_check/wrong_to_right": 0.2 if end and paying else 0.02,
                        "eval/sampled_self_check/right_to_wrong": 0.2 if end and not paying else 0.01,
                        "eval/sampled_self_check/accuracy_checked": 0.7, "eval/sampled_self_check/accuracy_unchecked": 0.4})
        rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    comps = [{"step": s, "prompt": "User: 48*53=? Assistant:", "answer": "2544", "correct": s >= 20,
              "completion": FIXED.split("Assistant: ")[1] if s >= 20 else "<answer> 2514 </answer>"}
             for s in range(1, 41)]
    # A second sample of step 1's prompt (shown once: one example per prompt) and a second prompt.
    comps[1:1] = [dict(comps[0], completion="<answer> 2515 </answer>"),
                  {"step": 1, "prompt": "User: 12*34=? Assistant:", "answer": "408", "correct": True,
                   "completion": "<answer> 408 </answer>"}]
    (d / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in comps))


def test_report_marks_the_aha_step_and_what_the_corrections_paid(tmp_path):
    from r1zero.report import aha_moment, load_run

    real, control = tmp_path / "real", tmp_path / "control"
    write_aha_run(real, paying=True)
    write_aha_run(control, paying=False)
    aha = aha_moment(load_run(real))
    # 2-step windows; the epoch-0 level is 0.03 per completion; the window that first holds step 20 crosses.
    assert aha["step"] == 20 and aha["window_steps"] == 2
    assert abs(aha["self_correction_start"] - 0.03) < 1e-12 and abs(aha["self_correction_end"] - 0.21) < 1e-12
    # Net corrections rise by 0.18 of the accuracy gain of 0.2.
    assert abs(aha["share_of_gain"] - 0.9) < 1e-9
    bad = aha_moment(load_run(control))
    assert bad["step"] is None and bad["share_of_gain"] is None  # more corrections, but they do not pay
    with open(control / "metrics.jsonl", "a") as f:  # accuracy up by 0.01 at the very end: within noise
        f.write(json.dumps({"step": 41, "accuracy": 0.31, **{f"self_check/{k}": 0.1 for k in
                                                             ("wrong_to_right", "right_to_wrong", "wrong_to_wrong")}}) + "\n")
    assert aha_moment(load_run(control))["share_of_gain"] is None
    assert main(["report", "--workdir", str(real), "--compare", str(control)]) == 0
    report = (real / "compare" / "report.md").read_text()
    assert "rises above its epoch-0 level at **step 20**" in report and "explain 90% of the accuracy gain" in report
    assert "never rises three standard errors" in report
    assert ("wrong->right corrections from the aha step on):\n\n    step 20, gold 2544, completion right: "
            "User: 48*53=? Assistant: <think> 48*3=144") in report  # a correction shown
    assert "step 1, gold 2544, completion wrong" in report and "step 1, gold 408, completion right" in report
    assert "2515" not in report  # the same prompt's second sample is not shown
    assert "after (the last logged step):\n\n    step 40, gold 2544" in report  # the control has no aha step
    assert "| real | 0.200 -> 0.600 | 0.020 -> 0.200 | 0.010 -> 0.010 | 0.300 -> 0.500 | 0.700 / 0.400 | 20 | 90% |" in report
    assert "| control | 0.200 -> 0.600 | 0.020 -> 0.020 | 0.010 -> 0.200 | 0.300 -> 0.300 | 0.700 / 0.400 | - | - |" in report
    facts = json.loads((real / "compare" / "emergence.json").read_text())
    assert facts["real"]["aha"]["step"] == 20 and facts["control"]["aha"]["step"] is None
    assert (real / "compare" / "plots" / "self_correction.png").read_bytes().startswith(PNG)


def test_the_table_names_a_share_of_the_gain_that_is_harm_undone(tmp_path):
    from r1zero.report import aha_table, load_run

    run = tmp_path / "undo"
    write_aha_run(run, paying=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows[1:]:  # the same accuracy rise, from checks that stop breaking right answers
        r.update({"self_check/wrong_to_right": 0.02, "self_check/right_to_wrong": 0.01 if r["step"] >= 20 else 0.2})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = aha_table([load_run(run), load_run(tmp_path / "undo")])
    assert table.count("| 95% (harm undone) |") == 2  # (0.01 - 0.2 fewer broken) / 0.2 accuracy
    write_aha_run(tmp_path / "real", paying=True)
    assert aha_table([load_run(tmp_path / "real")]).endswith("| 90% |")


def test_report_words_a_negative_share_of_the_gain_as_such():
    from r1zero.report import _share_words

    assert "fell while accuracy rose (share of the gain -190%)" in _share_words(-1.9)
    assert _share_words(0.25) == "; net corrections explain 25% of the accuracy gain" and _share_words(None) == ""
    assert "all from fewer right->wrong" in _share_words(0.28, more_fixes=False)
