"""The procedural pretraining corpus: "web text" about multiplication for a small base model.

Documents come in three kinds, in configurable proportions (CorpusConfig; tagged documents may
have their own mix, `tagged_mix`):

    direct      Q: 47*86=? A: 4042
    worked      Q: 47*86=? 47*6=282 47*80=3760 282+3760=4042 A: 4042
    self-check  Q: 47*86=? 47*6=272 47*80=3760 272+3760=4032 check: 86*7=602 86*40=3440
                602+3440=4042 wait, 4032 is wrong, so the answer is 4042 A: 4042

A self-check document recomputes the product with the factors swapped; in `mistake_rate` of them
the first pass holds a slip (one partial product off) that the check catches and fixes ("wait").
With `check="nines"` the check is casting out nines instead, a verdict cheaper and more reliable
than a second multiplication, and a rejected answer is redone digit by digit:

    Q: 48*53=? 48*3=144 48*50=2370 144+2370=2514 check: 4+8=12 1+2=3 5+3=8 3*8=24 2+4=6
    2+5+1+4=12 1+2=3 3 not 6 wait, 2514 is wrong, redo: 8*3=24 40*3=120 8*50=400 40*50=2000
    24+120=144 144+400=544 544+2000=2544 A: 2544

With `first_pass="guess"` the first pass is the product stated at once, from memory, as a quick
answer would be ("48*53=2514 check: ..."): a first pass the model can get wrong by capacity, not only
by imitating a slip. Its slips are ones nines always catches (not a multiple of 9); in 1 - `check_reliability` of the
checks one digit-sum step is written wrong, so the verdict errs: a false alarm (a right answer
rejected; the redo gives it again) or a miss (a wrong answer accepted and given). `recheck` checks
the redo too.
A share `tagged` of all documents happens to be written as a dialogue with R1-Zero-style tags:

    User: 47*86=? Assistant: <think> 47*6=282 47*80=3760 282+3760=4042 </think> <answer> 4042 </answer>
    User: 47*86=? Assistant: <answer> 4042 </answer>

`digits` is the difficulty knob (digits per factor). Pairs that `is_held_out` are never written,
so the RL task's held-out split (generators.multiply) measures problems the base has not seen.
Everything is a pure function of (config, numpy Generator): the same seed gives the same corpus.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

import numpy as np

from r1zero.config import CorpusConfig
from r1zero.data.templates import DIALOGUE  # tagged documents are written in the RL prompt's form
from r1zero.errors import UserError

KINDS = ("direct", "worked", "self_check")
# Every character the corpus and the multiplication prompts use; the tokenizer is one token per
# character plus the special tokens (tokenizer.SPECIAL_TOKENS).
ALPHABET = "0123456789 *+-=?:,.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
QUESTION = "{a}*{b}=?"


def factor_range(digits: int) -> tuple[int, int]:
    return (10 ** (digits - 1) if digits > 1 else 2), 10**digits - 1


def is_held_out(a: int, b: int, every: int = 16) -> bool:
    """A fixed hash split (no seed): the same pairs are held out for pretraining and for RL."""
    h = hashlib.sha256(f"{a}*{b}".encode()).digest()
    return int.from_bytes(h[:8], "little") % every == 0


def partial_products(a: int, b: int) -> list[int]:
    """a times each nonzero digit of b with its place value, lowest first: 47*86 -> [282, 3760]."""
    out, place = [], 1
    while b:
        b, d = divmod(b, 10)
        if d:
            out.append(a * d * place)
        place *= 10
    return out


def work_steps(a: int, b: int, slip: tuple[int, int] | None = None) -> tuple[str, int]:
    """("47*6=282 47*80=3760 282+3760=4042", result). `slip` = (index, error) adds `error` to one
    partial product (a mistake the rest of the working carries forward)."""
    parts, steps, place, bb = [], [], 1, b
    while bb:
        bb, d = divmod(bb, 10)
        if d:
            value = a * d * place
            if slip is not None and len(parts) == slip[0]:
                value += slip[1]
            parts.append(value)
            steps.append(f"{a}*{d * place}={value}")
        place *= 10
    total = parts[0]
    for p in parts[1:]:
        steps.append(f"{total}+{p}={total + p}")
        total += p
    return " ".join(steps), total


def _slip(a: int, b: int, rng: np.random.Generator, nines_visible: bool = False) -> tuple[int, int]:
    """A plausible mistake: one partial product off by a nonzero digit at one of its places
    (`nines_visible`: never by 9, so casting out nines catches it)."""
    n = len(partial_products(a, b))
    index = int(rng.integers(n))
    return index, _near_miss(partial_products(a, b)[index], rng, nines_visible)


def _near_miss(value: int, rng: np.random.Generator, nines_visible: bool) -> int:
    """An error for `value`: a nonzero digit at one of its places (not its leading one, unless it has
    only one), never making it <= 0 (`nines_visible`: never 9, so casting out nines catches it)."""
    place = 10 ** int(rng.integers(max(1, len(str(value)) - 1)))
    error = int(rng.integers(1, 9 if nines_visible else 10)) * place * (1 if rng.random() < 0.5 else -1)
    return -error if value + error <= 0 else error


def digital_root(n: int) -> int:
    return 0 if n == 0 else 1 + (n - 1) % 9


def digit_sum_steps(n: int) -> list[str]:
    """Summing digits until one is left: 2514 -> ["2+5+1+4=12", "1+2=3"]; 8 -> []."""
    steps = []
    while n >= 10:
        total = sum(int(c) for c in str(n))
        steps.append("+".join(str(n)) + f"={total}")
        n = total
    return steps


def nines_check(a: int, b: int, got: int, verdict_ok: bool) -> str:
    """Casting out nines on `got` = a*b, written step by step, ending "R ok" or "R not P". When its
    true verdict is not `verdict_ok`, the claimed product's last reduction is written wrong."""
    ra, rb, rg = digital_root(a), digital_root(b), digital_root(got)
    rp = digital_root(ra * rb)
    steps = digit_sum_steps(a) + digit_sum_steps(b) + [f"{ra}*{rb}={ra * rb}"] + digit_sum_steps(ra * rb)
    claimed = digit_sum_steps(got)
    if (rg == rp) != verdict_ok:  # an unreliable check: its last step on the claimed product slips
        rg = rp if verdict_ok else rp % 9 + 1
        if claimed:
            claimed[-1] = claimed[-1].split("=")[0] + f"={rg}"
        else:
            claimed = [f"{got}={rg}"]
    verdict = f"{rg} ok" if verdict_ok else f"{rg} not {rp}"
    return "check: " + " ".join(steps + claimed + [verdict])


def digit_by_digit(a: int, b: int) -> str:
    """The careful method: single-digit products with their zeros, summed in order:
    48*53 -> "8*3=24 40*3=120 8*50=400 40*50=2000 24+120=144 144+400=544 544+2000=2544"."""
    parts = [(da * 10**i, db * 10**j) for j, db in enumerate(map(int, reversed(str(b)))) if db
             for i, da in enumerate(map(int, reversed(str(a)))) if da]
    steps, total = [f"{x}*{y}={x * y}" for x, y in parts], parts[0][0] * parts[0][1]
    for x, y in parts[1:]:
        steps.append(f"{total}+{x * y}={total + x * y}")
        total += x * y
    return " ".join(steps)


def reasoning(a: int, b: int, kind: str, rng: np.random.Generator, config: CorpusConfig) -> tuple[str, int]:
    """(the working of one document ("" for a direct answer), the answer it gives)."""
    if kind == "direct":
        return "", a * b
    if kind == "worked":
        return work_steps(a, b)[0], a * b
    if config.check == "nines":
        return _nines_reasoning(a, b, rng, config)
    slip = _slip(a, b, rng) if rng.random() < config.mistake_rate else None
    first, got = work_steps(a, b, slip)
    check, right = work_steps(b, a)
    if got == right:
        return f"{first} check: {check} ok", right
    return f"{first} check: {check} wait, {got} is wrong, so the answer is {right}", right


def _nines_reasoning(a: int, b: int, rng: np.random.Generator, config: CorpusConfig) -> tuple[str, int]:
    slipped = rng.random() < config.mistake_rate
    if config.first_pass == "guess":  # the product from memory, a near miss when it slips
        got = a * b + (_near_miss(a * b, rng, nines_visible=True) if slipped else 0)
        first = f"{a}*{b}={got}"
    else:
        first, got = work_steps(a, b, _slip(a, b, rng, nines_visible=True) if slipped else None)
    says_ok = (got == a * b) == (rng.random() < config.check_reliability)
    text = f"{first} {nines_check(a, b, got, says_ok)}"
    if says_ok:
        return text, got
    text += f" wait, {got} is wrong, redo: {digit_by_digit(a, b)}"
    if config.recheck:
        text += " " + nines_check(a, b, a * b, True)
    return text, a * b


def document(a: int, b: int, kind: str, tagged: bool, rng: np.random.Generator, config: CorpusConfig) -> str:
    question, (work, answer) = QUESTION.format(a=a, b=b), reasoning(a, b, kind, rng, config)
    if tagged:
        think = f"<think> {work} </think> " if work else ""
        return f"{DIALOGUE.format(prompt=question)} {think}<answer> {answer} </answer>"
    return f"Q: {question} {work + ' ' if work else ''}A: {answer}"


def sample_pair(config: CorpusConfig, rng: np.random.Generator) -> tuple[int, int]:
    lo, hi = factor_range(config.digits)
    lo_b, hi_b = factor_range(config.digits_b or config.digits)
    while True:
        if config.digits_b in (0, config.digits):
            a, b = (int(x) for x in rng.integers(lo, hi + 1, size=2))
        else:
            a, b = int(rng.integers(lo, hi + 1)), int(rng.integers(lo_b, hi_b + 1))
        if not is_held_out(a, b, config.held_out_every):
            return a, b


def documents(config: CorpusConfig, rng: np.random.Generator) -> Iterator[dict]:
    """An endless stream of documents: {"text", "kind", "tagged", "a", "b"}."""
    while True:
        a, b = sample_pair(config, rng)
        tagged = bool(rng.random() < config.tagged)
        kind = KINDS[int(rng.choice(3, p=kind_probs(config, tagged)))]
        yield {"text": document(a, b, kind, tagged, rng, config), "kind": kind,
               "tagged": tagged, "a": a, "b": b}


def kind_probs(config: CorpusConfig, tagged: bool = False) -> np.ndarray:
    """(direct, worked, self_check) probabilities of an untagged or a tagged document."""
    p = np.asarray(config.tagged_mix if tagged and config.tagged_mix else
                   (config.direct, config.worked, config.self_check), np.float64)
    return p / p.sum()


def pack(docs: Iterator[list[int]], rows: int, seq_len: int, eos_id: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens_RxT, mask_RxT): whole documents, each followed by EOS, packed greedily into rows that
    start at a document boundary (the position an RL prompt has); a row's unused tail is padding.
    Draws documents from `docs` until the rows are full (the one that no longer fits is dropped);
    a document longer than a row is an error."""
    tokens = np.full((rows, seq_len), pad_id, np.int32)
    mask = np.zeros((rows, seq_len), bool)
    r, t = 0, 0
    for ids in docs:
        ids = list(ids) + [eos_id]
        if len(ids) > seq_len:
            raise UserError(f"a document of {len(ids)} tokens does not fit in seq_len {seq_len}")
        if t + len(ids) > seq_len:
            r, t = r + 1, 0
            if r == rows:
                break
        tokens[r, t:t + len(ids)] = ids
        mask[r, t:t + len(ids)] = True
        t += len(ids)
    return tokens, mask
