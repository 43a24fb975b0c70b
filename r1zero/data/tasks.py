"""Built-in procedural tasks, prompt templates, and a checkpointable prompt iterator."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from r1zero.config import TaskConfig

R1ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>. User: {prompt}. Assistant:"
)
TEMPLATES = {"plain": "{prompt}", "r1zero": R1ZERO_TEMPLATE}

# Special tokens of the character tokenizers r1zero writes for models it initialises itself.
SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>", "<think>", "</think>", "<answer>", "</answer>")

DIGIT_OPS = {
    "max": max,
    "min": min,
    "first": lambda ds: ds[0],
    "last": lambda ds: ds[-1],
    "sum_mod10": lambda ds: sum(ds) % 10,
}


def render(template: str, question: str) -> str:
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[template].format(prompt=question)


def digits_examples(operation: str, num_digits: int) -> list[dict]:
    """Every digit tuple of the given length: "max 3 8 4 =" -> "8" (a one-token answer)."""
    if operation not in DIGIT_OPS:
        raise ValueError(f"unknown digits operation {operation!r}; known: {sorted(DIGIT_OPS)}")
    out = []
    for ds in itertools.product(range(10), repeat=num_digits):
        question = f"{operation} {' '.join(map(str, ds))} ="
        out.append({"id": f"digits-{operation}-{''.join(map(str, ds))}", "question": question,
                    "answer": str(DIGIT_OPS[operation](ds))})
    return out


def load_task(config: TaskConfig, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, test) examples with templated prompts; the test split (eval_size examples, fixed by
    `seed`) is disjoint from train and never trained on."""
    if config.dataset != "digits":
        raise ValueError(f"unknown dataset {config.dataset!r}; known: ['digits']")
    examples = digits_examples(config.operation, config.difficulty)
    if not 0 < config.eval_size < len(examples):
        raise ValueError(f"eval_size must be between 1 and {len(examples) - 1}, got {config.eval_size}")
    for ex in examples:
        ex["prompt"] = render(config.template, ex["question"])
    order = np.random.default_rng(seed).permutation(len(examples))
    test = [examples[i] for i in order[: config.eval_size]]
    train = [examples[i] for i in order[config.eval_size:]]
    return train, test


class PromptIterator:
    """Batches of unique examples, reshuffled every epoch from (seed, epoch); `get_state` /
    `set_state` capture the exact position so a resumed run sees exactly the next examples."""

    def __init__(self, examples: list[dict], batch_size: int, seed: int):
        if not examples:
            raise ValueError("the training split is empty")
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self.epoch, self.index = 0, 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.examples))

    def __iter__(self):
        return self

    def __next__(self) -> list[dict]:
        batch = []
        while len(batch) < self.batch_size:
            if self.index >= len(self.examples):
                self.epoch, self.index = self.epoch + 1, 0
            order = self._order()
            take = min(self.batch_size - len(batch), len(self.examples) - self.index)
            batch += [self.examples[i] for i in order[self.index:self.index + take]]
            self.index += take
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def set_state(self, state: dict[str, Any]) -> None:
        self.epoch, self.index, self.seed = int(state["epoch"]), int(state["index"]), int(state["seed"])
