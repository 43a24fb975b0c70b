"""The device mesh and the one table that maps logical array axes to mesh axes.

Model code names the axes of every parameter (`axes=("embed", "mlp")` metadata on each `nnx.Param`);
this module turns those names into `NamedSharding`s on a mesh with axes (`data`, `fsdp`, `tensor`).
A new parallelism strategy is a change of `RULES`, not of model code. It also owns the layout of
batch rows (`rows_*`): the sampler, the trainer and the log-prob pass all place rows through it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from r1zero.config import MeshConfig
from r1zero.errors import UserError

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
        raise UserError(f"at most one mesh axis may be -1, got {config}")
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        if len(devices) % known:
            raise UserError(f"mesh {config} does not divide {len(devices)} devices")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise UserError(f"mesh {tuple(sizes)} needs {math.prod(sizes)} devices, {len(devices)} available")
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
        raise UserError(f"unknown parameter layout {layout!r}; one of {sorted(LAYOUTS)}")
    rules = LAYOUTS[layout]

    def one(var):
        if not isinstance(var, nnx.Variable):
            return NamedSharding(mesh, P())
        axes = var.get_metadata().get("axes")
        shape = var.get_value().shape
        spec = logical_to_spec(axes, shape, mesh, rules) if axes is not None else P()
        return var.replace(NamedSharding(mesh, spec))

    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


# ---------------------------------------------------------------------------------------------------
# Batch rows: the one layout of every batch (prompts, rollouts, minibatches, log-prob passes). Rows
# are split over (data, fsdp) where their count divides those axes; otherwise every device holds all
# of them (one process only: several processes each hold their own rows, which must divide).


def rows_split(n_rows: int, mesh: Mesh) -> bool:
    """Whether `n_rows` rows divide over the (data, fsdp) devices of `mesh`."""
    return n_rows % (mesh.shape["data"] * mesh.shape["fsdp"]) == 0


def rows_spec(ndim: int, axis: int = 0) -> P:
    """PartitionSpec of an array whose `axis` holds batch rows: that axis over (data, fsdp)."""
    spec = [None] * ndim
    spec[axis] = RULES["batch"]
    return P(*spec)


def constrain_rows(x: jax.Array, mesh: Mesh | None, axis: int = 0) -> jax.Array:
    """Inside jit: `x` split over (data, fsdp) along `axis` where the rows divide, else as it is."""
    if mesh is None or mesh.shape["data"] * mesh.shape["fsdp"] == 1 or not rows_split(x.shape[axis], mesh):
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, rows_spec(x.ndim, axis)))


def rows_to_global(tree: Any, mesh: Mesh | None, axis: int = 0) -> Any:
    """Global arrays from this process's rows (numpy, along `axis`), split over (data, fsdp); on one
    process, replicated where the rows do not divide. On several, each passes its own rows.
    Without a mesh (a model on one device) the arrays come back as they are."""
    if mesh is None:
        return tree

    def one(x):
        x = np.asarray(x)
        n_rows = x.shape[axis] * jax.process_count()
        if rows_split(n_rows, mesh):
            spec = rows_spec(x.ndim, axis)
        elif jax.process_count() == 1:
            spec = P()
        else:
            raise UserError(f"{n_rows} rows do not split over data x fsdp of the mesh {dict(mesh.shape)}")
        return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), x)

    return jax.tree.map(one, tree)


def micro_batch_to_global(mb: dict[str, np.ndarray], mesh: Mesh | None) -> dict[str, Any]:
    """A micro-batch (`rollout.minibatches`) as global arrays: its rows with `rows_to_global`; the
    prompt table `prefix_*` (the same on every host) replicated."""
    table = {k: v for k, v in mb.items() if k in ("prefix_tokens", "prefix_mask")}
    rows = rows_to_global({k: v for k, v in mb.items() if k not in table}, mesh)
    if mesh is not None:
        sh = replicated(mesh)
        table = {k: jax.make_array_from_callback(v.shape, sh, lambda i, v=v: v[i]) for k, v in table.items()}
    return {**rows, **table}


def rows_to_local(tree: Any, mesh: Mesh | None, axis: int = 0) -> Any:
    """This process's rows of global arrays (split along `axis`), as numpy."""
    if mesh is None or jax.process_count() == 1:
        return jax.tree.map(np.asarray, jax.device_get(tree))
    from jax.experimental import multihost_utils

    def one(x):
        x = jax.device_put(x, NamedSharding(mesh, rows_spec(x.ndim, axis)))
        return np.asarray(multihost_utils.global_array_to_host_local_array(x, mesh, rows_spec(x.ndim, axis)))

    return jax.tree.map(one, tree)


def process_rows(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """This process's contiguous share of rows that every process holds in full (e.g. a batch each
    host generates from the same seed), ready for `rows_to_global`."""
    n, i = jax.process_count(), jax.process_index()
    size = x.shape[axis] // n
    return np.take(x, np.arange(i * size, (i + 1) * size), axis=axis)
