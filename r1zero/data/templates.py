"""Prompt templates. The template is recorded in every run's config.json."""

from __future__ import annotations

from pathlib import Path

from r1zero.errors import UserError, read_json

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
# Prompting as inference-time scaling (r1zero eval --template a,b,...): answer at once, or reason first.
DIRECT = "Question: {prompt}\nAnswer:"
STEP_BY_STEP = "Question: {prompt}\nLet's think step by step."
TEMPLATES = {"plain": "{prompt}", "r1zero": R1ZERO, "qwen_math": QWEN_MATH, "dialogue": DIALOGUE, "direct": DIRECT,
             "step_by_step": STEP_BY_STEP}


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


MAX_CHAT_CHARS = 1 << 20  # a chat template that renders one prompt longer than this is refused
MAX_CHAT_SECONDS = 2.0  # ... or that takes longer than this


def render_chat(tokenizer_dir: str | Path | None, question: str) -> str:
    """The chat template of tokenizer_config.json (or chat_template.jinja), rendered in a sandbox
    with bounded output size and time (a template is code from the model directory)."""
    if tokenizer_dir is None:
        raise UserError("template 'chat' needs a model directory with a chat template")
    d = Path(tokenizer_dir)
    source, where = None, d / "chat_template.jinja"
    if where.is_file():
        source = where.read_text()
    elif (d / "tokenizer_config.json").is_file():
        where = d / "tokenizer_config.json"
        found = read_json(where)
        source = found.get("chat_template") if isinstance(found, dict) else None
    if not source:
        raise UserError(f"template 'chat': {d} has no chat template (tokenizer_config.json or chat_template.jinja)")
    return _render_bounded(_sandbox().from_string(source), where, messages=[{"role": "user", "content": question}],
                           add_generation_prompt=True, bos_token="", eos_token="")


def _sandbox():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Bounded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator, left, right):
            for seq, n in ((left, right), (right, left)):  # "x" * 10**9 builds a gigabyte before any output
                if operator == "*" and isinstance(seq, (str, list, tuple)) and isinstance(n, int) and \
                        len(seq) * n > MAX_CHAT_CHARS:
                    raise UserError(f"chat template: a repetition of {len(seq) * n:,} items is too large")
            if operator == "**" and isinstance(right, int) and abs(right) > 64:
                raise UserError("chat template: an exponent above 64 is too large")
            return super().call_binop(context, operator, left, right)

    env = Bounded(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message):
        raise UserError(f"chat template: {message}")

    env.globals["raise_exception"] = raise_exception
    return env


def _render_bounded(template, where: Path, **context) -> str:
    """Renders chunk by chunk, stopping at MAX_CHAT_CHARS of output or MAX_CHAT_SECONDS: the template's
    own lines are traced (a loop that writes nothing still runs its lines), nothing else is."""
    import sys
    import time

    deadline = time.monotonic() + MAX_CHAT_SECONDS

    def each_line(frame, event, arg):
        if time.monotonic() > deadline:
            raise UserError(f"{where}: the chat template took over {MAX_CHAT_SECONDS}s to render one prompt")
        return each_line

    previous = sys.gettrace()
    sys.settrace(lambda frame, event, arg: each_line if frame.f_code.co_filename == "<template>" else None)
    try:
        out, size = [], 0
        for chunk in template.generate(**context):
            size += len(chunk)
            if size > MAX_CHAT_CHARS:
                raise UserError(f"{where}: the chat template renders one prompt to over {MAX_CHAT_CHARS:,} characters")
            out.append(chunk)
        return "".join(out)
    finally:
        sys.settrace(previous)
