"""Text statistics behind the emergence metrics, against counts written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from r1zero.metrics import is_step_by_step, reflective_rates, text_stats


@pytest.mark.parametrize("text,expected", [
    (" <answer> 4042 </answer>", False),
    (" <think> 47*6=282 47*80=3760 282+3760=4042 </think> <answer> 4042 </answer>", True),
    (" <think> 47*86=4042 </think> <answer> 4042 </answer>", False),  # one equation is not a working
    ("First, 47 times 6.\nThen add.\n<answer> 4042 </answer>", True),  # prose: two lines
    (" <think>\n</think>\n<answer> 1=1 2=2 </answer>", False),  # equations after <answer> do not count
    (" 60*1=80 80*30=140 80+140=220 check: 33*2=10", False),  # no answer reached: rambling, not working
    ("1+2=3\n3+4=7\nso \\boxed{7}", True),
])
def test_step_by_step(text, expected):
    assert is_step_by_step(text) == expected


def test_text_stats_matches_hand_counts():
    texts = [" <think> 1*2=2 2+3=5 </think> <answer> 5 </answer>",  # steps, correct
             " <answer> 7 </answer>",  # direct, wrong
             " <think> 1*2=2 wait, 2+3=5 </think> <answer> 6 </answer>",  # steps + reflective, wrong
             " <answer> 5 </answer>"]  # direct, correct
    lengths = np.asarray([20, 5, 25, 5])
    correct = np.asarray([True, False, False, True])
    formatted = np.asarray([True, False, True, False])
    s = text_stats(texts, lengths, correct, formatted, prefix="x/")
    assert s["x/accuracy"] == 0.5 and s["x/format"] == 0.5 and s["x/length"] == 13.75
    assert s["x/length_correct"] == 12.5 and s["x/length_incorrect"] == 15.0
    assert s["x/step_by_step"] == 0.5 and s["x/step_by_step_correct"] == 0.5 and s["x/step_by_step_incorrect"] == 0.5
    assert s["x/reflective"] == 0.25 and s["x/reflective_correct"] == 0.0 and s["x/reflective_incorrect"] == 0.5
    assert s["x/accuracy_step_by_step"] == 0.5 and s["x/accuracy_direct"] == 0.5
    none_right = text_stats(texts[1:3], lengths[1:3], correct[1:3], formatted[1:3])
    assert math.isnan(none_right["length_correct"])


def test_reflective_words_are_whole_words():
    rates = reflective_rates(["Wait, let me check.", "a waiter checks", "but"])
    assert rates["reflect/wait"] == pytest.approx(1 / 3) and rates["reflect/check"] == pytest.approx(1 / 3)
    assert rates["reflect/any"] == pytest.approx(2 / 3)


def test_logs_are_read_past_a_torn_last_line_but_not_a_bad_middle_one(tmp_path):
    import pytest

    from r1zero.errors import UserError
    from r1zero.metrics import read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert [row["step"] for row in read_jsonl(path)] == [1, 2]
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(UserError, match="metrics.jsonl line 2: not a log row"):
        read_jsonl(path)
    path.write_text('{"step": 1}\n[1, 2]\n{"step": 3}\n')
    with pytest.raises(UserError, match="metrics.jsonl line 2: not a log row \\(not a JSON object\\)"):
        read_jsonl(path)


# --- self-correction, read from the working --------------------------------------------------------

SELF_CHECKS = [  # (completion, gold, expected (checked, rejected, first, final, event)), written by hand
    ("<think> 47*6=282 47*80=3760 282+3760=4042 </think> <answer> 4042 </answer>", "4042",
     (False, False, 4042, 4042, "none")),
    ("Q: 47*86=? 47*6=282 47*80=3760 282+3760=4042 check: 86*7=602 86*40=3440 602+3440=4042 ok A: 4042", "4042",
     (True, False, 4042, 4042, "accepted")),
    ("<think> 47*6=272 47*80=3760 272+3760=4032 check: 86*7=602 86*40=3440 602+3440=4042 wait, 4032 is wrong, "
     "so the answer is 4042 </think> <answer> 4042 </answer>", "4042", (True, True, 4032, 4042, "wrong->right")),
    ("<think> 48*3=144 48*50=2400 144+2400=2544 check: 4+8=12 3 5+3=8 8 3*8=24 6 2+5+4+4=15 6 6 not 6 wait, "
     "2544 is wrong, redo: 48*3=144 48*50=2370 144+2370=2514 </think> <answer> 2514 </answer>", "2544",
     (True, True, 2544, 2514, "right->wrong")),  # a false alarm that broke a right answer
    ("<think> 48*3=144 48*50=2370 144+2370=2514 check: 3 not 6 wait, 2514 is wrong, redo: 48*3=144 48*50=2380 "
     "144+2380=2524 </think> <answer> 2524 </answer>", "2544", (True, True, 2514, 2524, "wrong->wrong")),
    ("<think> 12*3=36 check: this is wrong </think> <answer> 36 </answer>", "36", (True, True, 36, 36, "kept")),
    ("<think> check: wrong </think> <answer> 5 </answer>", "5", (True, True, None, 5, "kept")),  # nothing stated
    ("<think> 12*3=36 check 36 ok and then the text is cut", "36", (True, False, 36, None, "accepted")),  # no answer
    ("", "1", (False, False, None, None, "none")),
]


@pytest.mark.parametrize("text, gold, expected", SELF_CHECKS)
def test_self_check_reads_every_kind_of_working(text, gold, expected):
    from r1zero.metrics import self_check

    c = self_check(text, gold)
    assert (c.checked, c.rejected, c.first, c.final, c.event) == expected


def test_self_check_marks_checks_whose_arithmetic_is_right():
    from r1zero.metrics import equations_right, self_check

    # By hand: rows 2-4 write only right equations in their checks (row 4's verdict is wrong, but its sums
    # are right); row 5's check has no equation, the others have no check or none with equations.
    assert [self_check(t, g).arithmetic_right for t, g, _ in SELF_CHECKS] == [False, True, True, True] + [False] * 5
    slip = SELF_CHECKS[2][0].replace("86*40=3440", "86*40=3450")
    assert not self_check(slip, "4042").arithmetic_right
    # The redo after the verdict is not part of the check.
    assert self_check(SELF_CHECKS[3][0].replace("48*50=2370", "48*50=1"), "2544").arithmetic_right
    assert equations_right("2+5+1+4=12 3*8=24 12 = 12") and not equations_right("no sums") and not equations_right("2*3+1=6")
    assert equations_right("4 + 8 = 12 1 + 2 = 3") and not equations_right("4 + 8 = 13")
    assert not equations_right("36=36 ok")  # an identity is not a check's arithmetic
    assert equations_right("40-4=36 3+6=9") and not equations_right("40-4=36")  # other operators are skipped
    assert equations_right("1+" * 100 + "1=101") and not equations_right("1+" * 300 + "1=301")  # over 256 digits
    assert not equations_right("9" * 5000 + "=1") and not equations_right("9*" * 5000 + "9=1")  # bounded, no int() limit


def test_self_check_survives_hostile_text():
    import time

    from r1zero.metrics import self_check, self_check_stats

    huge = "9" * 5000
    c = self_check(f"<think> 12*3={huge} check: 4+5=9 wrong </think> <answer> {huge} </answer>", "36")
    assert (c.first, c.final) == (None, None)  # numbers past 64 digits are not answers
    c = self_check("<think> 12*3=36 check: 3+6=9 ok </think> <answer> 36 </answer>", "36")
    assert (c.first, c.final, c.arithmetic_right) == (36, 36, True)
    start = time.perf_counter()
    texts = ["check: " + "1+" * 20000 + "1", "check: " + "1 + " * 12000 + "1 A: 1", "=" + "9" * 50000,
             "check: " + "9*" * 20000 + "9=1",
             "A: " + "1" * 30000, "<answer> " + "7" * 30000 + " </answer>"]
    self_check_stats(texts, ["1"] * len(texts), np.zeros(len(texts), bool))
    # Not a speed goal: a guard against catastrophic regex backtracking or huge integers, which take minutes here.
    assert time.perf_counter() - start < 30


def test_self_check_stats_count_by_hand():
    from r1zero.metrics import self_check_stats

    texts, golds, _ = zip(*SELF_CHECKS[:5])
    correct = np.array([True, True, True, False, False])
    got = self_check_stats(texts, golds, correct)
    # checked: rows 1-4; rejected: 2, 3, 4; first right: rows 0, 1, 3
    assert got["self_check/check_rate"] == 4 / 5
    assert got["self_check/verified_right"] == 2 / 5
    assert got["self_check/check_rate_correct"] == 2 / 3 and got["self_check/check_rate_incorrect"] == 1.0
    assert got["self_check/accuracy_checked"] == 2 / 4 and got["self_check/accuracy_unchecked"] == 1.0
    assert got["self_check/check_false_alarm"] == 1 / 2  # checked with a right first answer: rows 1 (kept), 3 (rejected)
    assert got["self_check/check_miss"] == 0.0  # checked with a wrong first answer: rows 2, 4, both rejected
    assert got["self_check/check_exact"] == 2 / 4  # rows 1 and 2; row 3's verdict is wrong, row 4 wrote no sums
    assert [got[f"self_check/{e}"] for e in ("wrong_to_right", "right_to_wrong", "wrong_to_wrong")] == [0.2, 0.2, 0.2]
    empty = self_check_stats(["<answer> 3 </answer>"], ["3"], np.array([True]))
    assert np.isnan(empty["self_check/check_false_alarm"]) and np.isnan(empty["self_check/accuracy_checked"])
    none = self_check_stats([], [], np.array([], bool))  # no rows (a host with no problems)
    assert all(np.isnan(v) for v in none.values())
    # a check with no stated first answer is neither a miss nor a catch
    unstated = self_check_stats(["<think> check: ok </think> <answer> 5 </answer>"], ["6"], np.array([False]))
    assert np.isnan(unstated["self_check/check_miss"])
