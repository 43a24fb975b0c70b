"""An arithmetic-only expression parser over exact fractions, with hard caps.

Grammar: expr := term (('+' | '-') term)* ; term := factor (('*' | '/') factor)* ;
factor := ('+' | '-')* ( '(' expr ')' | number ). Numbers are ASCII decimals. Anything else
(names, '**', unicode lookalikes such as '−' or '４') is a syntax error, and the caps on length,
literal digits and the size of every intermediate value make each call finish in microseconds
whatever the input (`44**19**35` fails at the second '*'). Only parentheses recurse, so the length
cap bounds the nesting (at most MAX_CHARS / 2 levels: any parenthesised answer that fits is read).
"""

from __future__ import annotations

from fractions import Fraction

MAX_CHARS = 256
MAX_DEPTH = MAX_CHARS // 2  # never binds before the length cap; a guard for the recursion
MAX_DIGITS = 12
MAX_BITS = 256  # of numerator and denominator of any intermediate value
_DIGITS = frozenset("0123456789")


class ArithError(ValueError):
    pass


def evaluate(text: str) -> tuple[Fraction, list[str]]:
    """(value, number literals as written, in order of appearance) of an arithmetic expression;
    ArithError if invalid. Literals stay text, so a caller can tell "3" from "3.0" or "03"."""
    if len(text) > MAX_CHARS:
        raise ArithError(f"expression longer than {MAX_CHARS} characters")
    parser = _Parser(_tokens(text))
    value = parser.expr(0)
    if parser.pos != len(parser.tokens):
        raise ArithError(f"unexpected {parser.tokens[parser.pos]!r}")
    return value, parser.literals


def _tokens(text: str) -> list[str]:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch in " \t\n":
            i += 1
        elif ch in "+-*/()":
            out.append(ch)
            i += 1
        elif ch in _DIGITS or ch == ".":
            j = i
            while j < len(text) and (text[j] in _DIGITS or text[j] == "."):
                j += 1
            literal = text[i:j]
            if literal.count(".") > 1 or literal == "." or sum(c in _DIGITS for c in literal) > MAX_DIGITS:
                raise ArithError(f"bad number {literal[:20]!r}")
            out.append(literal)
            i = j
        else:
            raise ArithError(f"character {ch!r} is not allowed")
    return out


class _Parser:
    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.literals = tokens, 0, []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        if self.pos >= len(self.tokens):
            raise ArithError("unexpected end of expression")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op, rhs = self.take(), self.term(depth)
            value = _check(value + rhs if op == "+" else value - rhs)
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op, rhs = self.take(), self.factor(depth)
            if op == "/" and rhs == 0:
                raise ArithError("division by zero")
            value = _check(value * rhs if op == "*" else value / rhs)
        return value

    def factor(self, depth: int) -> Fraction:
        if depth > MAX_DEPTH:
            raise ArithError("expression nested too deeply")
        tok, sign = self.take(), 1
        while tok in ("+", "-"):  # unary signs, read in a loop: they add no recursion
            sign, tok = (sign if tok == "+" else -sign), self.take()
        if tok == "(":
            value = self.expr(depth + 1)
            if self.take() != ")":
                raise ArithError("missing ')'")
        elif tok[0] in _DIGITS or tok[0] == ".":
            value = Fraction(tok)
            self.literals.append(tok)
        else:
            raise ArithError(f"unexpected {tok!r}")
        return value if sign == 1 else -value


def _check(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
        raise ArithError("intermediate value too large")
    return value
