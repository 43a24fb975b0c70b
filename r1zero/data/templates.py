"""Prompt templates. The template is recorded in every run's config.json."""

from __future__ import annotations

import json
from pathlib import Path

from r1zero.errors import UserError

R1ZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>. User: {prompt}. Assistant:"
)
QWEN_MATH = (
    "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n"
    "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
)
# The R1-Zero template's shape (reasoning in <think>, answer in <answer> follow "Assistant:") without
# its English instructions: the form the pretraining corpus's tagged documents use (data/corpus.py).
DIALOGUE = "User: {prompt} Assistant:"
TEMPLATES = {"plain": "{prompt}", "r1zero": R1ZERO, "qwen_math": QWEN_MATH, "dialogue": DIALOGUE}


def render(template: str, question: str, tokenizer_dir: str | Path | None = None) -> str:
    """The prompt text for `question`. `chat` uses the tokenizer's own chat template (instruct models);
    any other string containing `{prompt}` is used as a template as it is."""
    if template == "chat":
        return render_chat(tokenizer_dir, question)
    text = TEMPLATES.get(template, template)
    if "{prompt}" not in text:
        raise UserError(f"template {template!r} is neither a known template ({sorted(TEMPLATES) + ['chat']}) "
                         f"nor a string with a {{prompt}} slot")
    return text.format(prompt=question)


def render_chat(tokenizer_dir: str | Path | None, question: str) -> str:
    """The chat template of tokenizer_config.json (or chat_template.jinja), rendered in a sandbox."""
    if tokenizer_dir is None:
        raise UserError("template 'chat' needs a model directory with a chat template")
    d = Path(tokenizer_dir)
    source = None
    if (d / "chat_template.jinja").is_file():
        source = (d / "chat_template.jinja").read_text()
    elif (d / "tokenizer_config.json").is_file():
        source = json.loads((d / "tokenizer_config.json").read_text()).get("chat_template")
    if not source:
        raise UserError(f"template 'chat': {d} has no chat template (tokenizer_config.json or chat_template.jinja)")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message):
        raise UserError(f"chat template: {message}")

    env.globals["raise_exception"] = raise_exception
    return env.from_string(source).render(messages=[{"role": "user", "content": question}],
                                          add_generation_prompt=True, bos_token="", eos_token="")
