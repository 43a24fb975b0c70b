"""Rule-based rewards: a registry of named functions with one contract.

A reward function takes a batch of completions (text) and their examples (dicts) and returns one
`Score` per completion: a value, or "could not score" (`value is None`) with a reason (a broken gold
answer, a checker that timed out). Could-not-score is not "wrong": the trainer leaves such
completions out of their group's baseline and of the loss, and counts them.

Model text is untrusted: it is parsed, never passed to eval/exec/sympify in this process.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from r1zero.config import CodeConfig
from r1zero.errors import UserError


@dataclasses.dataclass(frozen=True)
class Score:
    value: float | None  # None: could not score
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Context:
    """What a reward may know besides the text: the run seed and step (for the random control), and
    the code section (the sandbox the code reward runs programs in)."""

    seed: int = 0
    step: int = 0
    code: CodeConfig = CodeConfig()


RewardFn = Callable[[Sequence[str], Sequence[dict], Context], list[Score]]
REGISTRY: dict[str, RewardFn] = {}


def register(name: str):
    def wrap(fn: RewardFn) -> RewardFn:
        if name in REGISTRY:
            raise ValueError(f"reward {name!r} is registered twice")
        REGISTRY[name] = fn
        return fn

    return wrap


# The answer a completion gives, as a vote (r1zero.evaluate's majority voting): one key per reward
# that checks answers; equivalent answers (as that reward judges them) get the same key; None: no
# answer to vote with.
ANSWER_KEYS: dict[str, Callable[[str], str | None]] = {}


def answer_key(name: str):
    def wrap(fn: Callable[[str], str | None]) -> Callable[[str], str | None]:
        ANSWER_KEYS[name] = fn
        return fn

    return wrap


def get_answer_key(name: str) -> Callable[[str], str | None]:
    if name not in ANSWER_KEYS:
        raise UserError(f"reward {name!r} checks no answer to vote on; majority voting needs one of {sorted(ANSWER_KEYS)}")
    return ANSWER_KEYS[name]


def get(name: str) -> RewardFn:
    if name not in REGISTRY:
        raise UserError(f"unknown reward {name!r}; known rewards: {sorted(REGISTRY)}")
    return REGISTRY[name]


@dataclasses.dataclass
class Scored:
    """Rewards of a batch. total_B: weighted sum (0 where invalid); valid_B: every weighted part
    scored; parts: name -> values_B (NaN where that part could not score); reasons: per row."""

    total: np.ndarray
    valid: np.ndarray
    parts: dict[str, np.ndarray]
    reasons: list[str]

    def take(self, rows: np.ndarray) -> Scored:
        """The rows at indices `rows`, in that order."""
        return Scored(self.total[rows], self.valid[rows], {k: v[rows] for k, v in self.parts.items()},
                      [self.reasons[i] for i in rows])

    @staticmethod
    def concat(parts: Sequence[Scored]) -> Scored:
        """The rows of several batches (scored by the same rewards) one after another."""
        return Scored(np.concatenate([s.total for s in parts]), np.concatenate([s.valid for s in parts]),
                      {k: np.concatenate([s.parts[k] for s in parts]) for k in parts[0].parts},
                      sum((s.reasons for s in parts), []))


def score(completions: Sequence[str], examples: Sequence[dict], weights: dict[str, float],
          context: Context = Context(), measure: Sequence[str] = ()) -> Scored:
    """Weighted sum of the named rewards; a row any weighted reward could not score is invalid.
    `measure`: more rewards computed for their values only (in `parts`; weight 0, so they change
    neither the total nor validity), e.g. the accuracy check behind the metrics of a run that is
    not rewarded for accuracy."""
    if len(completions) != len(examples):
        raise ValueError(f"{len(completions)} completions but {len(examples)} examples")
    weights = {**weights, **{name: 0.0 for name in measure if name not in weights}}
    n = len(completions)
    total, valid, reasons, parts = np.zeros(n), np.ones(n, bool), [""] * n, {}
    for name, weight in weights.items():
        results = get(name)(completions, examples, context)
        values = np.asarray([np.nan if r.value is None else r.value for r in results], np.float64)
        parts[name] = values
        for i, r in enumerate(results):
            if r.value is None and weight != 0:
                valid[i] = False
                reasons[i] = reasons[i] or f"{name}: {r.reason}"
        total += weight * np.nan_to_num(values)
    return Scored(total=np.where(valid, total, 0.0), valid=valid, parts=parts, reasons=reasons)


def passed(values_B: np.ndarray) -> np.ndarray:
    """[B] bool: which completions passed a 0/1 check (value 1; could-not-score counts as failed)."""
    return np.nan_to_num(values_B) >= 1.0


# Register the built-in rewards.
from r1zero.rewards import basic, code, countdown, math  # noqa: E402,F401
