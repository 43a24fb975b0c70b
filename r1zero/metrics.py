"""Run logging: metrics.jsonl + TensorBoard (one row per step), completions.jsonl, eval_completions.jsonl,\nand the text statistics of R1-Zero's signatures (accuracy, length, step-by-step share, reflective words)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# The words the DeepSeek-R1 report tracks as signs of reflection.
REFLECTIVE_WORDS = ("wait", "mistake", "however", "but", "retry", "error", "verify", "wrong", "evaluate", "check")
_WORD_RE = {w: re.compile(rf"\b{w}\b", re.IGNORECASE) for w in REFLECTIVE_WORDS}


def reflective_rates(texts: Sequence[str], prefix: str = "reflect") -> dict[str, float]:
    """Share of texts containing each reflective word, and containing any of them."""
    if not texts:
        return {}
    hits = {w: np.asarray([bool(r.search(t)) for t in texts]) for w, r in _WORD_RE.items()}
    out = {f"{prefix}/{w}": float(h.mean()) for w, h in hits.items()}
    out[f"{prefix}/any"] = float(np.any(np.stack(list(hits.values())), axis=0).mean())
    return out


ANSWER_MARKERS = ("<answer>", "\\boxed{")


def is_step_by_step(text: str) -> bool:
    """Whether a completion works its way to an answer: it gives an answer (`<answer>` or
    `\\boxed{`) and the text before it holds at least two equations ("47*6=282 47*80=3760") or at
    least two non-empty lines. A heuristic made for arithmetic tasks (for prose reasoning, line breaks
    count); text that never reaches an answer is not counted, however many equations it holds."""
    cut = min((text.find(m) for m in ANSWER_MARKERS if m in text), default=-1)
    if cut < 0:
        return False
    reasoning = re.sub(r"</?think>", "", text[:cut])
    lines = [line for line in reasoning.splitlines() if line.strip()]
    return reasoning.count("=") >= 2 or len(lines) >= 2


# Self-correction, read from the working rather than counted as words (base models already say
# "wait"; Dr. GRPO): the working states an answer ("... 144+2370=2514"), a check follows ("check:
# ..."), the check rejects it ("2514 is wrong", "3 not 6") or not, and the final answer is kept or
# differs. Numbers are compared with the gold answer, so a correction is wrong->right, right->wrong
# or wrong->wrong.
_CHECK = re.compile(r"\bcheck\b", re.IGNORECASE)
_REJECT = re.compile(r"\b(?:wrong|not|mistake|incorrect)\b", re.IGNORECASE)
# Numbers of at most 64 digits (model text is untrusted: a longer run of digits is not an answer, and
# int() of more than 4,300 digits raises).
_STATED = re.compile(r"=\s*(-?\d{1,64})(?!\d)")
_FINAL = re.compile(r"<answer>\s*(-?\d{1,64})\s*</answer>|\bA:\s*(-?\d{1,64})(?!\d)")
# Where a check's own working ends: its verdict, the redo, the answer, or another check.
_CHECK_END = re.compile(r"\b(?:ok|wait|redo|check|so)\b|</think>|<answer>|\bA:", re.IGNORECASE)
# A sum or product with at least one operator, "= result": spaces around operators are removed first
# (_OPERATOR_SPACES), so no match can start inside a chain and the scan stays linear in the text.
_EQUATION = re.compile(r"(?<![\d+*-])(\d+(?:[+*]\d+)+)=(\d+)")
_OPERATOR_SPACES = re.compile(r"\s*([+*=-])\s*")
SELF_CHECK_EVENTS = ("none", "accepted", "kept", "wrong->right", "right->wrong", "wrong->wrong")


@dataclasses.dataclass(frozen=True)
class SelfCheck:
    """One completion's check. event: none (no check), accepted (the check let the first answer
    stand), kept (rejected, but the final answer is the first, or one of them is missing), or the
    correction's direction."""

    checked: bool
    rejected: bool
    first: int | None  # the answer the working stated before the check
    final: int | None  # the answer given (<answer> or "A:")
    event: str
    arithmetic_right: bool = False  # the check wrote at least one equation, and every one is right


MAX_EQUATION_DIGITS = 256  # an equation with more digits than this is not checked: it counts as wrong


def _value(expression: str) -> int:
    """A sum of products of integers ("4+8", "3*8", "2+5+1+4"), parsed, never eval'd."""
    return sum(math.prod(int(f) for f in term.split("*")) for term in expression.replace(" ", "").split("+"))


def _equation_right(lhs: str, rhs: str) -> bool:
    if sum(c.isdigit() for c in lhs) + len(rhs) > MAX_EQUATION_DIGITS:  # bounded work on untrusted text
        return False
    return _value(lhs) == int(rhs)


def equations_right(text: str) -> bool:
    """Whether `text` holds at least one equation of sums and products ("a+b=c", "a*b=c", "2+5+1+4=12";
    an identity such as "36=36" is not one, and chains with other operators are skipped) and every one
    of them is right."""
    found = _EQUATION.findall(_OPERATOR_SPACES.sub(r"\1", text))
    return bool(found) and all(_equation_right(lhs, rhs) for lhs, rhs in found)


def self_check(text: str, gold: str) -> SelfCheck:
    """Parses a completion's first answer, check and final answer (see above)."""
    finals = list(_FINAL.finditer(text))
    final = int(finals[-1].group(1) or finals[-1].group(2)) if finals else None
    body = text[:finals[-1].start()] if finals else text
    check = _CHECK.search(body)
    before = body[:check.start()] if check else body
    stated = _STATED.findall(before)
    first = int(stated[-1]) if stated else None
    if check is None:
        return SelfCheck(False, False, first, final, "none")
    rejected = bool(_REJECT.search(body[check.end():]))
    end = _CHECK_END.search(body, check.end())
    arithmetic = equations_right(body[check.end():end.start() if end else len(body)])
    if not rejected:
        return SelfCheck(True, False, first, final, "accepted", arithmetic)
    if first is None or final is None or first == final:
        return SelfCheck(True, True, first, final, "kept", arithmetic)
    right = lambda x: str(x) == str(gold).strip()
    return SelfCheck(True, True, first, final, f"{'right' if right(first) else 'wrong'}->{'right' if right(final) else 'wrong'}",
                     arithmetic)


def self_check_stats(texts: Sequence[str], golds: Sequence[str], correct: np.ndarray) -> dict[str, float]:
    """Check rate (split by correctness), accuracy with and without a check, verified-right
    (checked and correct), the check's false-alarm rate (rejects a right first answer) and miss rate
    (accepts a wrong one), the exact-check rate (of checks after a stated answer: every equation of
    the check right and its verdict right), and self-correction events per completion by direction.
    NaN where a denominator is empty."""
    checks = [self_check(t, g) for t, g in zip(texts, golds)]
    correct = np.asarray(correct, bool)
    checked = np.asarray([c.checked for c in checks], bool)
    rejected = np.asarray([c.rejected for c in checks], bool)
    stated = np.asarray([c.first is not None for c in checks], bool)
    first_right = np.asarray([c.first is not None and str(c.first) == str(g).strip() for c, g in zip(checks, golds)],
                             bool)
    events = np.asarray([c.event for c in checks], str)
    share = lambda m: float(m.mean()) if m.size else math.nan
    out = {"check_rate": share(checked), "verified_right": share(checked & correct)}
    out["check_rate_correct"], out["check_rate_incorrect"] = split_mean(checked, correct)
    out["accuracy_checked"], out["accuracy_unchecked"] = split_mean(correct, checked)
    out["check_false_alarm"] = split_mean(rejected[checked], first_right[checked])[0]
    out["check_miss"] = split_mean(~rejected[checked & stated], ~first_right[checked & stated])[0]
    exact = np.asarray([c.arithmetic_right for c in checks], bool) & (rejected != first_right)
    out["check_exact"] = share(exact[checked & stated])
    for event in ("wrong->right", "right->wrong", "wrong->wrong"):
        out[event.replace("->", "_to_")] = share(events == event)
    return {f"self_check/{k}": float(v) for k, v in out.items()}


def text_stats(texts: Sequence[str], lengths: np.ndarray, correct: np.ndarray, formatted: np.ndarray,
               prefix: str = "", golds: Sequence[str] | None = None) -> dict[str, float]:
    """The emergence metrics of a batch of completions (R1-Zero's signatures), split by correctness
    where it matters: accuracy, format rate, length in tokens, step-by-step share, reflective-word
    rate (any of REFLECTIVE_WORDS), and the accuracy of completions that work step by step vs those
    that answer directly; with `golds`, the self-check statistics too. NaN where a side is empty."""
    correct, formatted = np.asarray(correct, bool), np.asarray(formatted, bool)
    steps = np.asarray([is_step_by_step(t) for t in texts], bool)
    reflect = np.asarray([any(r.search(t) for r in _WORD_RE.values()) for t in texts], bool)
    out = {"accuracy": correct.mean(), "format": formatted.mean(), "length": np.mean(lengths),
           "step_by_step": steps.mean(), "reflective": reflect.mean()}
    out["length_correct"], out["length_incorrect"] = split_mean(lengths, correct)
    out["step_by_step_correct"], out["step_by_step_incorrect"] = split_mean(steps, correct)
    out["reflective_correct"], out["reflective_incorrect"] = split_mean(reflect, correct)
    out["accuracy_step_by_step"], out["accuracy_direct"] = split_mean(correct, steps)
    if golds is not None:
        out.update(self_check_stats(texts, golds, correct))
    return {prefix + k: float(v) for k, v in out.items()}


def split_mean(values: np.ndarray, by: np.ndarray) -> tuple[float, float]:
    """(mean where `by`, mean where not `by`), NaN for an empty side."""
    values, by = np.asarray(values, np.float64), np.asarray(by, bool)
    pick = lambda m: float(values[m].mean()) if m.any() else math.nan
    return pick(by), pick(~by)


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows (JSON objects) of a log. A last line that is not one is a write cut short (a kill, a
    full disk): it is left out, with a warning. A bad line before the last is an error naming it."""
    import logging

    from r1zero.errors import UserError

    lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            row, why = None, e.msg
        else:
            why = "not a JSON object"
        if isinstance(row, dict):
            rows.append(row)
        elif i < len(lines):
            raise UserError(f"{path} line {i}: not a log row ({why})")
        else:
            logging.getLogger("r1zero.metrics").warning("%s: its last line is cut short; left out", path)
    return rows


class MetricWriter:
    """Appends one JSON object per row to `metrics.jsonl` and mirrors numbers to TensorBoard."""

    def __init__(self, workdir: str | Path, tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled  # on several hosts only the first one writes
        self.dir = Path(workdir)
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.dir / "metrics.jsonl", "a")
        self._completions = open(self.dir / "completions.jsonl", "a")
        self._eval = open(self.dir / "eval_completions.jsonl", "a")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"))

    def write(self, step: int, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _jsonable(v) for k, v in row.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def write_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        for r in rows:
            self._completions.write(json.dumps({"step": step, **{k: _jsonable(v) for k, v in r.items()}}) + "\n")
        self._completions.flush()

    def write_eval(self, step: int, rows: list[dict[str, Any]]) -> None:
        """One row per held-out example of an evaluation (greedy and sampled completions)."""
        if not self.enabled:
            return
        for r in rows:
            self._eval.write(json.dumps({"step": step, **r}) + "\n")
        self._eval.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._metrics.close()
        self._completions.close()
        self._eval.close()
        if self._tb is not None:
            self._tb.close()


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        v = v.item()
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
