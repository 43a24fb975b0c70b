"""What a GRPO run holds on each device, from its config alone (no devices, no weights): for
`r1zero info --config` and for choosing a mesh before a run is launched.

Counted: the parameters, AdamW's two moments (in the parameter dtype, as optax keeps them), the
frozen reference (when beta > 0), the gradients of an update, the copy of the weights the sampler
decodes with when its layout differs from the training one, and the rollout's KV cache (prompt and
completion slots for every row, rows split over data x fsdp; decoding in phases, also the cache of
the previous phase while the last one grows it). Not counted: activations (see
`model.remat` and `optim.micro_batches`), XLA's temporary buffers, and the runtime's own reserve.
"""

from __future__ import annotations

import math

import numpy as np

from r1zero.config import ModelConfig, TrainConfig
from r1zero.errors import UserError
from r1zero.models.factory import param_bytes_per_device
from r1zero.sampler import phase_ends

GIB = 2**30


def mesh_shape(config: TrainConfig, devices: int) -> dict[str, int]:
    """The run's mesh sizes on `devices` devices (its one -1 axis takes what is left)."""
    sizes = {"data": config.mesh.data, "fsdp": config.mesh.fsdp, "tensor": config.mesh.tensor}
    known = math.prod(v for v in sizes.values() if v != -1)
    free = [k for k, v in sizes.items() if v == -1]
    if len(free) > 1 or devices % known or (not free and known != devices):
        raise UserError(f"mesh {tuple(sizes.values())} does not fit {devices} devices")
    if free:
        sizes[free[0]] = devices // known
    return sizes


def per_device(config: TrainConfig, model: ModelConfig, mesh: dict[str, int]) -> dict[str, float]:
    """GiB per device of each item above, their peak during a rollout and during an update."""
    params = param_bytes_per_device(model, mesh)
    layout = config.sampling.param_layout
    if layout == "auto":
        layout = "tensor" if mesh["fsdp"] > 1 else "train"
    decode = {"train": 0, "tensor": param_bytes_per_device(model, {**mesh, "fsdp": 1}),
              "replicated": param_bytes_per_device(model, {"data": 1, "fsdp": 1, "tensor": 1})}[layout]
    s = config.sampling
    rows = config.prompts_per_rollout * s.num_samples
    split = mesh["data"] * mesh["fsdp"]
    rows_here = rows // split if rows % split == 0 else rows
    cache_item = np.dtype(s.cache_dtype or model.compute_dtype).itemsize
    slots = s.max_prompt_len + s.max_new_tokens
    ends = phase_ends(s.max_new_tokens) if s.decode_phases else [s.max_new_tokens]
    if len(ends) > 1:  # the last phase grows the cache: the previous one is held beside it meanwhile
        slots += s.max_prompt_len + ends[-2]
    kv = 2 * model.num_layers * rows_here * model.num_kv_heads * model.head_dim * slots
    out = {"params": params, "optimizer": 2 * params, "reference": params if config.grpo.beta else 0,
           "gradients": params, "decode_weights": decode, "kv_cache": kv * cache_item}
    held = out["params"] + out["optimizer"] + out["reference"]
    out["rollout_peak"] = held + out["decode_weights"] + out["kv_cache"]
    out["update_peak"] = held + out["gradients"]
    return {k: v / GIB for k, v in out.items()}
