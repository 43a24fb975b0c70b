"""Creating models already sharded on a mesh, from random init or from host arrays.

The idiom (from nanodo): build the model abstractly (`nnx.eval_shape`, no memory), read the
shardings off its `axes` metadata, then materialise every parameter directly in its sharded layout
(`jax.jit(..., out_shardings=...)`), so no device ever holds a full copy it should not.
"""

from __future__ import annotations

import functools
import math
import types
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from r1zero import sharding
from r1zero.config import ModelConfig
from r1zero.models.decoder import Decoder


def abstract_model(config: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """The model's graph definition and a State of ShapeDtypeStructs (allocates nothing)."""
    return nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))


def param_bytes_per_device(config: ModelConfig, mesh_shape: Mapping[str, int]) -> int:
    """Bytes of the parameters each device holds on a mesh of these axis sizes ({"data": 1, "fsdp":
    8, "tensor": 1}), by the rules that place them (`sharding.logical_to_spec`); no devices needed.
    A dimension is split only where the split is even, so every device holds the same."""
    mesh = types.SimpleNamespace(shape=dict(mesh_shape))  # all logical_to_spec reads of a mesh
    total = 0
    for _, var in nnx.to_flat_state(abstract_model(config)[1]):
        value, axes = var.get_value(), var.get_metadata().get("axes")
        spec = sharding.logical_to_spec(axes, value.shape, mesh) if axes is not None else ()
        shard = list(value.shape)
        for i, entry in enumerate(spec):
            for axis in ((entry,) if isinstance(entry, str) else entry or ()):
                shard[i] //= mesh.shape[axis]
        total += math.prod(shard) * value.dtype.itemsize
    return total


def create_model(config: ModelConfig, mesh: Mesh, seed: int = 0) -> Decoder:
    """A randomly initialised Decoder whose parameters are created already sharded on `mesh`."""
    graphdef, abstract = abstract_model(config)
    shardings = sharding.state_shardings(abstract, mesh)

    @functools.partial(jax.jit, out_shardings=shardings)
    def init():
        return nnx.split(Decoder(config, rngs=nnx.Rngs(seed)))[1]

    return nnx.merge(graphdef, init())


def model_from_arrays(config: ModelConfig, arrays: Mapping[str, Any], mesh: Mesh) -> Decoder:
    """A Decoder holding the given host arrays (a nested dict shaped like the model's state),
    each placed on `mesh` with its sharding and cast to the configured parameter dtype.

    Raises ValueError naming any missing, unexpected or mis-shaped parameter.
    """
    graphdef, abstract = abstract_model(config)
    flat_abstract = dict(nnx.to_flat_state(abstract))
    flat_given = _flatten(arrays)
    missing = sorted(".".join(map(str, k)) for k in flat_abstract.keys() - flat_given.keys())
    extra = sorted(".".join(map(str, k)) for k in flat_given.keys() - flat_abstract.keys())
    if missing or extra:
        raise ValueError(f"parameters do not match the model: missing {missing}, unexpected {extra}")
    shardings = dict(nnx.to_flat_state(sharding.state_shardings(abstract, mesh)))
    for key, var in flat_abstract.items():
        value = np.asarray(flat_given[key])
        if value.shape != var.get_value().shape:
            raise ValueError(
                f"parameter {'.'.join(map(str, key))} has shape {value.shape}, expected {var.get_value().shape}"
            )
        var.set_value(jax.device_put(value.astype(var.get_value().dtype), shardings[key].get_value()))
    return nnx.merge(graphdef, nnx.from_flat_state(flat_abstract))


def _flatten(tree: Mapping[str, Any], prefix: tuple = ()) -> dict[tuple, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def to_host_arrays(model: Decoder) -> dict:
    """The model's parameters as a nested dict of numpy arrays (gathered from all devices)."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    nested: dict = {}
    for key, var in flat:
        node = nested
        for part in key[:-1]:
            node = node.setdefault(part, {})
        value = var.get_value()
        if not value.is_fully_addressable:  # several hosts: a collective, every process calls it
            from jax.experimental import multihost_utils

            value = multihost_utils.process_allgather(value, tiled=True)
        node[key[-1]] = np.asarray(jax.device_get(value))
    return nested
