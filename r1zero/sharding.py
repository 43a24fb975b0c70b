"""The device mesh and the one table that maps logical array axes to mesh axes.

Model code names the axes of every parameter (`axes=("embed", "mlp")` metadata on each `nnx.Param`);
this module turns those names into `NamedSharding`s on a mesh with axes (`data`, `fsdp`, `tensor`).
A new parallelism strategy is a change of `RULES`, not of model code.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from r1zero.config import MeshConfig

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or tuple of mesh axes, or None for replicated).
RULES: dict[str, Any] = {
    "batch": ("data", "fsdp"),  # examples are split over data- and fsdp-parallel devices
    "embed": "fsdp",  # FSDP: parameters are split along the model width
    "heads": "tensor",  # Megatron-style tensor parallelism over heads and the MLP width
    "kv_heads": "tensor",
    "mlp": "tensor",
    "vocab": "tensor",
    "head_dim": None,
    "layers": None,  # the stacked (scanned) layer axis is never split
    "norm": None,
}


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all); one size may be -1."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [config.data, config.fsdp, config.tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {config}")
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        if len(devices) % known:
            raise ValueError(f"mesh {config} does not divide {len(devices)} devices")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh {tuple(sizes)} needs {math.prod(sizes)} devices, {len(devices)} available")
    # Auto axis types: jax.make_mesh defaults to Explicit, which ordinary model code does not satisfy.
    return jax.make_mesh(
        tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices
    )


# Parameter layouts the sampler may decode with (a reshard at the start of each rollout): "train"
# keeps RULES; "tensor" drops the FSDP split (no all-gather of weights at every decoded token);
# "replicated" keeps a whole copy on every device.
LAYOUTS = {
    "train": RULES,
    "tensor": {**RULES, "embed": None},
    "replicated": {k: (RULES[k] if k == "batch" else None) for k in RULES},
}


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: dict[str, Any] | None = None) -> P:
    """PartitionSpec for an array with logical `axes`; a mesh axis that does not divide its
    dimension (e.g. 2 KV heads over 4-way tensor parallelism) leaves that dimension replicated."""
    rules = RULES if rules is None else rules
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {tuple(axes)} do not match shape {tuple(shape)}")
    spec = []
    for name, dim in zip(axes, shape):
        mesh_axes = rules[name] if name is not None else None
        if mesh_axes is None:
            spec.append(None)
            continue
        mesh_axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
        mesh_axes = tuple(a for a in mesh_axes if mesh.shape[a] > 1)
        size = math.prod(mesh.shape[a] for a in mesh_axes)
        if not mesh_axes or dim % size:
            spec.append(None)
        else:
            spec.append(mesh_axes if len(mesh_axes) > 1 else mesh_axes[0])
    return P(*spec)


def state_shardings(abstract_state: Any, mesh: Mesh, layout: str = "train") -> Any:
    """NamedShardings for an (abstract) nnx.State, from each Variable's `axes` metadata and the
    rules of `layout` (see LAYOUTS). Variables without `axes` are replicated."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown parameter layout {layout!r}; one of {sorted(LAYOUTS)}")
    rules = LAYOUTS[layout]

    def one(var):
        if not isinstance(var, nnx.Variable):
            return NamedSharding(mesh, P())
        axes = var.get_metadata().get("axes")
        shape = var.get_value().shape
        spec = logical_to_spec(axes, shape, mesh, rules) if axes is not None else P()
        return var.replace(NamedSharding(mesh, spec))

    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a [batch, ...] array: batch over (`data`, `fsdp`), other dims replicated."""
    return NamedSharding(mesh, P(RULES["batch"], *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())

