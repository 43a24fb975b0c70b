"""Tasks and data: tfds builders (`builders`), grain pipelines (`pipeline`), templates.

tensorflow-datasets and grain are imported only inside this package and only when data is loaded,
so the model, sampler and trainer import without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1zero.config import TaskConfig
from r1zero.data.templates import render
from r1zero.errors import MissingFileError, UserError


def load_task(config: TaskConfig, seed: int, data_dir: str | Path, batch_size: int,
              tokenizer_dir: str | Path | None = None, train: bool = True) -> tuple[Any, list[dict]]:
    """(train iterator of prompt batches, held-out examples), both templated (`prompt` field);
    train=False: (None, held-out examples), for datasets that are only held out (humaneval)."""
    from r1zero.data import builders
    from r1zero.data.pipeline import PromptIterator, decode

    render(config.template, "x", tokenizer_dir)  # a bad template fails before any data is built
    b = _build(builders, config, seed, config.data_dir or data_dir)
    splits = b.info.splits
    if config.dataset == "humaneval" and train:
        raise UserError("task.dataset: humaneval is for evaluation only (its 164 problems are the test split); "
                        "train on your own problems with task.dataset=code and task.path=FILE.jsonl")
    if "train" not in splits and train:
        raise UserError(f"dataset {config.dataset!r} has no train split (splits: {sorted(splits)}); "
                         f"does it need task.path?")
    if config.eval_split not in splits:
        raise UserError(f"dataset {config.dataset!r} has no split {config.eval_split!r} (splits: {sorted(splits)})")

    def prepare(ex: dict) -> dict:
        return {**ex, "prompt": render(config.template, ex["question"], tokenizer_dir)}

    held_out_source = b.as_data_source(config.eval_split)
    held_out = [prepare(decode(held_out_source[i])) for i in range(len(held_out_source))]
    return (PromptIterator(b.as_data_source("train"), batch_size, seed, prepare) if train else None), held_out


def check_task(config: TaskConfig, tokenizer_dir: str | Path | None = None) -> None:
    """The task's names and files, checked without building anything: a known dataset (and
    reasoning-gym generator), `task.path` where one is needed or given, a template that renders."""
    from r1zero.data.generators import GENERATORS

    name = config.dataset
    if name.startswith("reasoning_gym:"):
        import reasoning_gym

        known = sorted(reasoning_gym.factory.DATASETS)
        if name.split(":", 1)[1] not in known:
            raise UserError(f"task.dataset: unknown reasoning_gym dataset {name!r}; known: {known}")
    elif name not in GENERATORS:
        raise UserError(f"task.dataset: unknown dataset {name!r}; known: {sorted(GENERATORS)} and reasoning_gym:<name>")
    if name in ("jsonl", "code") and not config.path:
        raise UserError(f"task.path: dataset {name!r} needs a file")
    if config.path and not Path(config.path).exists():
        raise MissingFileError(f"task.path {config.path} does not exist")
    render(config.template, "x", tokenizer_dir)


def _build(builders, config: TaskConfig, seed: int, data_dir):
    """The prepared builder; on several hosts the first builds while the others wait, then they read."""
    import jax

    if jax.process_count() == 1:
        return builders.builder(config, seed, data_dir)
    from jax.experimental import multihost_utils

    b = builders.builder(config, seed, data_dir) if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("r1zero: dataset built")
    return b or builders.builder(config, seed, data_dir)


__all__ = ["check_task", "load_task", "render"]
