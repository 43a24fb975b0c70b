"""Tasks and data: tfds builders (`builders`), grain pipelines (`pipeline`), templates.

tensorflow-datasets and grain are imported only inside this package and only when data is loaded,
so the model, sampler and trainer import without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1zero.config import TaskConfig
from r1zero.data.templates import render
from r1zero.errors import UserError


def load_task(config: TaskConfig, seed: int, data_dir: str | Path, batch_size: int,
              tokenizer_dir: str | Path | None = None) -> tuple[Any, list[dict]]:
    """(train iterator of prompt batches, held-out examples), both templated (`prompt` field)."""
    from r1zero.data import builders
    from r1zero.data.pipeline import PromptIterator, decode

    render(config.template, "x", tokenizer_dir)  # a bad template fails before any data is built
    b = _build(builders, config, seed, config.data_dir or data_dir)
    splits = b.info.splits
    if "train" not in splits:
        raise UserError(f"dataset {config.dataset!r} has no train split (splits: {sorted(splits)}); "
                         f"does it need task.path?")
    if config.eval_split not in splits:
        raise UserError(f"dataset {config.dataset!r} has no split {config.eval_split!r} (splits: {sorted(splits)})")

    def prepare(ex: dict) -> dict:
        return {**ex, "prompt": render(config.template, ex["question"], tokenizer_dir)}

    held_out_source = b.as_data_source(config.eval_split)
    held_out = [prepare(decode(held_out_source[i])) for i in range(len(held_out_source))]
    return PromptIterator(b.as_data_source("train"), batch_size, seed, prepare), held_out


def _build(builders, config: TaskConfig, seed: int, data_dir):
    """The prepared builder; on several hosts the first builds while the others wait, then they read."""
    import jax

    if jax.process_count() == 1:
        return builders.builder(config, seed, data_dir)
    from jax.experimental import multihost_utils

    b = builders.builder(config, seed, data_dir) if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("r1zero: dataset built")
    return b or builders.builder(config, seed, data_dir)


__all__ = ["load_task", "render"]
