"""The optimizer both loops use (GRPO and pretraining)."""

from __future__ import annotations

import optax

from r1zero.config import OptimConfig


def make_optimizer(o: OptimConfig, steps: int) -> optax.GradientTransformation:
    """AdamW after global-norm clipping; linear warmup, then `o.schedule` until `steps`."""
    decay_steps = max(steps - o.warmup_steps, 1)
    if o.schedule == "constant":
        main = optax.constant_schedule(o.learning_rate)
    elif o.schedule == "cosine":
        main = optax.cosine_decay_schedule(o.learning_rate, decay_steps)
    elif o.schedule == "linear":
        main = optax.linear_schedule(o.learning_rate, 0.0, decay_steps)
    else:
        raise ValueError(f"unknown schedule {o.schedule!r}; one of constant, cosine, linear")
    lr = optax.join_schedules([optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps), main],
                              [o.warmup_steps]) if o.warmup_steps else main
    return optax.chain(
        optax.clip_by_global_norm(o.max_grad_norm),
        optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay),
    )
