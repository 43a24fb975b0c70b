"""Runs only inside IsolatedPool workers (see rewards/math.py): math-verify parses with sympy."""

from __future__ import annotations


def equivalent(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    return bool(verify(parse(f"${gold}$"), parse(f"${pred}$")))
