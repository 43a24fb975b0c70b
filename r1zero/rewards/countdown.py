"""Countdown, scored as TinyZero does: 1.0 for a correct equation in <answer>, 0.1 for an answer
that is not a correct equation, 0.0 for no answer. Checked by `arith`, never by eval."""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

from r1zero.rewards import Context, Score, answer_key, register
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
    if sorted(literals) != sorted(str(n) for n in numbers):  # each number exactly once, as given ("3", not "3.0")
        return FORMATTED
    return CORRECT if value == target else FORMATTED


def _integer(x) -> int:
    """An example's number: an integer, or text or a float that is exactly one (never truncated)."""
    if isinstance(x, bool):
        raise TypeError(f"{x!r} is not a number")
    value = Fraction(str(x).strip()) if isinstance(x, str) else Fraction(x)
    if value.denominator != 1:
        raise ValueError(f"{x!r} is not an integer")
    return int(value)


@answer_key("countdown")
def equation_key(text: str) -> str | None:
    found = extract_answer(text)
    return "".join(found.split()) or None if found is not None else None


@register("countdown")
def countdown(completions: Sequence[str], examples: Sequence[dict], context: Context) -> list[Score]:
    out = []
    for c, ex in zip(completions, examples):
        try:
            numbers, target = [_integer(n) for n in ex["numbers"]], _integer(ex["target"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError) as e:
            out.append(Score(None, f"broken example: {type(e).__name__}: {e}"))
            continue
        out.append(Score(score_equation(extract_answer(c), numbers, target)))
    return out
