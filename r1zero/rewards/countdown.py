"""Countdown, scored as TinyZero does: 1.0 for a correct equation in <answer>, 0.1 for an answer
that is not a correct equation, 0.0 for no answer. Checked by `arith`, never by eval."""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

from r1zero.rewards import Context, Score, register
from r1zero.rewards.arith import ArithError, evaluate
from r1zero.rewards.basic import extract_answer

CORRECT, FORMATTED, NO_ANSWER = 1.0, 0.1, 0.0


def score_equation(answer: str | None, numbers: Sequence[int], target: int) -> float:
    if answer is None:
        return NO_ANSWER
    try:
        value, literals = evaluate(answer)
    except ArithError:
        return FORMATTED
    if sorted(literals) != sorted(Fraction(n) for n in numbers):  # each number exactly once
        return FORMATTED
    return CORRECT if value == target else FORMATTED


@register("countdown")
def countdown(completions: Sequence[str], examples: Sequence[dict], context: Context) -> list[Score]:
    out = []
    for c, ex in zip(completions, examples):
        try:
            numbers, target = [int(n) for n in ex["numbers"]], int(ex["target"])
        except (KeyError, TypeError, ValueError) as e:
            out.append(Score(None, f"broken example: {type(e).__name__}: {e}"))
            continue
        out.append(Score(score_equation(extract_answer(c), numbers, target)))
    return out
