"""The optimizer both loops use (GRPO and pretraining): its transform, its state created sharded
like the parameters, and the shape of a jitted update step (shardings, donation)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from r1zero import sharding
from r1zero.config import OptimConfig
from r1zero.errors import UserError


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
        raise UserError(f"unknown schedule {o.schedule!r}; one of constant, cosine, linear")
    lr = optax.join_schedules([optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps), main],
                              [o.warmup_steps]) if o.warmup_steps else main
    return optax.chain(
        optax.clip_by_global_norm(o.max_grad_norm),
        optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay),
    )


def init_opt_state(tx: optax.GradientTransformation, params: Any, mesh) -> tuple[Any, Any]:
    """(opt_state, its shardings): created on device, each moment split like its parameter, the
    scalars (step counts) replicated."""
    param_sh = jax.tree.map(lambda x: x.sharding, params)
    opt_sh = optax.tree_map_params(tx, lambda _, sh: sh, jax.eval_shape(tx.init, params), param_sh,
                                   transform_non_params=lambda _: sharding.replicated(mesh))
    return jax.jit(tx.init, out_shardings=opt_sh)(params), opt_sh


def jit_update(step: Callable, params: Any, opt_sh: Any, mesh) -> Callable:
    """jax.jit of `step(params, opt_state, batch) -> (params, opt_state, stats)`: the parameters
    and optimizer state are donated (updated in place) and leave in the shardings they came in;
    the stats come back replicated."""
    param_sh = jax.tree.map(lambda x: x.sharding, params)
    return jax.jit(step, out_shardings=(param_sh, opt_sh, sharding.replicated(mesh)), donate_argnums=(0, 1))
