"""Math answers: extract the single final answer, normalise, decide equivalence.

Numbers, fractions and simple LaTeX are decided here exactly (`fractions.Fraction`, no eval); what is
left (symbolic expressions) goes to math-verify inside `IsolatedPool` workers (several at once) with a
memory cap, a wall-clock timeout per check and a budget per batch. A timed-out, crashed or unreached
check is "could not score", with the reason.
"""

from __future__ import annotations

import atexit
import os
import re
from fractions import Fraction
from typing import Sequence

from r1zero.rewards import Context, Score, answer_key, register
from r1zero.rewards.basic import extract_answer

TIMEOUT_S = 5.0  # per symbolic check
BATCH_TIMEOUT_S = 30.0  # per scoring call: checks left when it runs out are "could not score"
WORKERS = max(2, min(4, (os.cpu_count() or 2) // 2))
MAX_SYMBOLIC_CHARS = 400  # longer answers are not sent to the symbolic checker: judged wrong
_pool = None


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def final_answer(text: str) -> str | None:
    """The <answer> content if there is one, else the last \\boxed{}; never the whole text."""
    answer = extract_answer(text)
    if answer is not None:
        inner = last_boxed(answer)  # "<answer>\\boxed{3}</answer>" is common
        return inner if inner is not None else answer
    return last_boxed(text)


_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")


def normalize(s: str) -> str:
    s = s.strip().strip("$").strip()
    s = _TEXT.sub(r"\1", s)
    for old in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\ ", "^\\circ", "^{\\circ}", "\\%", "%", "\\$"):
        s = s.replace(old, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)  # 1,000 -> 1000
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


def to_number(s: str) -> Fraction | None:
    """An integer, decimal, a/b or \\frac{a}{b} (optionally negative), exactly; else None."""
    m = _FRAC.fullmatch(s.lstrip("-"))
    sign = -1 if s.startswith("-") else 1
    try:
        if m:
            return sign * Fraction(m.group(1)) / Fraction(m.group(2))
        if re.fullmatch(r"-?\d+(\.\d+)?(/\d+)?", s) and len(s) <= 40:
            return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _symbolic_pool():
    global _pool
    if _pool is None:
        from r1zero.rewards.isolated import IsolatedPool

        _pool = IsolatedPool("r1zero.rewards.math_worker:equivalent", workers=WORKERS, timeout_s=TIMEOUT_S,
                             batch_timeout_s=BATCH_TIMEOUT_S)
        atexit.register(_pool.close)
    return _pool


def canonical(answer: str | None) -> str | None:
    """An answer as a vote: normalised, and a number written one way ("0.5", "1/2", "\\frac{1}{2}"
    -> "1/2"); None for no answer."""
    if answer is None:
        return None
    answer = normalize(answer).strip("$").rstrip(".").strip("$")  # "$\\frac{1}{2}$."
    answer = re.sub(r"^[a-zA-Z]=", "", answer).lstrip("+")  # "x=1/2", "+0.5"
    answer = re.sub(r"\\[dt]?frac(\d)(\d)", r"\\frac{\1}{\2}", answer)  # \frac12
    answer = re.sub(r"^(-?)\.(\d)", r"\g<1>0.\2", answer)  # .5
    number = to_number(answer)
    return str(number) if number is not None else (answer or None)


@answer_key("math")
def math_key(text: str) -> str | None:
    return canonical(final_answer(text))


@register("math")
def math_reward(completions: Sequence[str], examples: Sequence[dict], context: Context) -> list[Score]:
    """1.0 if the final answer is equivalent to the example's `answer`, 0.0 if not or if missing."""
    out: list[Score | None] = []
    symbolic: list[tuple[int, str, str]] = []
    for i, (c, ex) in enumerate(zip(completions, examples)):
        gold = normalize(str(ex.get("answer", "")))
        if not gold:
            out.append(Score(None, "broken gold answer (empty)"))
            continue
        pred = final_answer(c)
        if pred is None:
            out.append(Score(0.0))
            continue
        pred = normalize(pred)
        g, p = to_number(gold), to_number(pred)
        if pred == gold or (g is not None and g == p):
            out.append(Score(1.0))
        elif (g is not None and p is not None) or not pred or len(pred) > MAX_SYMBOLIC_CHARS:
            out.append(Score(0.0))
        else:
            out.append(None)
            symbolic.append((i, gold, pred))
    if symbolic:
        results = _symbolic_pool().map([(g, p) for _, g, p in symbolic])
        for (i, _, _), (ok, value) in zip(symbolic, results):
            out[i] = Score(float(bool(value))) if ok else Score(None, f"symbolic check failed: {value}")
    return out  # type: ignore[return-value]
