"""The R1-Zero format reward, exact-match answers (bare or in <answer> tags), and the random-reward control."""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

from r1zero.rewards import Context, Score, answer_key, register

_TAG = r"</?(?:think|answer)>"
_FREE = rf"(?:(?!{_TAG}).)*"  # text containing none of the four tags
_FORMAT = re.compile(rf"\s*<think>{_FREE}</think>\s*<answer>{_FREE}</answer>\s*", re.DOTALL)


def template_tail(prompt: str) -> str:
    """The part of the prompt the completion continues inside: from a final `<think>` that the
    prompt opens and does not close (TinyZero-style templates), else nothing."""
    start = prompt.rfind("<think>")
    if start < 0 or "</think>" in prompt[start:]:
        return ""
    return prompt[start:]


def is_formatted(text: str) -> bool:
    """Exactly one <think>...</think> followed by exactly one <answer>...</answer>, nothing else
    around them but whitespace (no repeated or nested tags)."""
    return _FORMAT.fullmatch(text) is not None


def extract_answer(text: str) -> str | None:
    """Content of the last <answer>...</answer>, or None: the matches are those of
    `re.findall(r"<answer>(.*?)</answer>")` (non-overlapping, leftmost first), found in one pass
    (the regex rescans the rest of the text from every unclosed <answer>: quadratic)."""
    found, pos = None, 0
    while (start := text.find("<answer>", pos)) >= 0:
        end = text.find("</answer>", start + len("<answer>"))
        if end < 0:
            break
        found, pos = text[start + len("<answer>"):end], end + len("</answer>")
    return found


@register("format")
def format_reward(completions: Sequence[str], examples: Sequence[dict], context: Context) -> list[Score]:
    """1.0 when the template's tail plus the completion has the R1-Zero format, else 0.0."""
    return [Score(float(is_formatted(template_tail(ex.get("prompt", "")) + c)))
            for c, ex in zip(completions, examples)]


@register("exact_match")
def exact_match(completions: Sequence[str], examples: Sequence[dict], context: Context) -> list[Score]:
    """1.0 when the completion, stripped, is exactly the example's answer (tasks with bare answers)."""
    out = []
    for c, ex in zip(completions, examples):
        if "answer" not in ex:
            out.append(Score(None, "example has no 'answer'"))
        else:
            out.append(Score(float(c.strip() == str(ex["answer"]).strip())))
    return out


@answer_key("exact_match")
def exact_key(text: str) -> str | None:
    return text.strip() or None


@answer_key("answer")
def tagged_key(text: str) -> str | None:
    found = extract_answer(text)
    return found.strip() or None if found is not None else None


@register("answer")
def answer_match(completions: Sequence[str], examples: Sequence[dict], context: Context) -> list[Score]:
    """1.0 when the content of the last <answer>...</answer>, stripped, is exactly the example's
    answer (short exact answers such as integers); 0.0 when it differs or there is no answer tag."""
    out = []
    for c, ex in zip(completions, examples):
        if "answer" not in ex:
            out.append(Score(None, "example has no 'answer'"))
            continue
        got = extract_answer(c)
        out.append(Score(float(got is not None and got.strip() == str(ex["answer"]).strip())))
    return out


@register("random")
def random_reward(completions: Sequence[str], examples: Sequence[dict], context: Context) -> list[Score]:
    """Control arm: 0 or 1 by a hash of (seed, step, row, completion), independent of correctness."""
    out = []
    for i, c in enumerate(completions):
        digest = hashlib.sha256(f"{context.seed}:{context.step}:{i}:{c}".encode()).digest()
        out.append(Score(float(digest[0] & 1)))
    return out
