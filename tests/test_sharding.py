"""Mesh construction, the logical-axis table, and the forward pass on 8 fake CPU devices.

The multi-device check runs this file as a script in a subprocess, because the fake device count
must be set before jax is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from r1zero.config import MeshConfig


def test_make_mesh_fills_the_free_axis():
    import jax

    from r1zero.sharding import make_mesh

    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    assert dict(mesh.shape) == {"data": 1, "fsdp": len(jax.devices()), "tensor": 1}
    with pytest.raises(ValueError, match="needs 4 devices"):
        make_mesh(MeshConfig(data=2, fsdp=2, tensor=1))
    with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
        make_mesh(MeshConfig(data=-1, fsdp=-1))


def test_logical_to_spec_replicates_what_does_not_divide():
    from jax.sharding import PartitionSpec as P

    from r1zero.sharding import logical_to_spec

    # A stand-in mesh object: only `.shape` is read.
    mesh = type("M", (), {"shape": {"data": 2, "fsdp": 4, "tensor": 4}})()
    assert logical_to_spec(("embed", "heads", "head_dim"), (64, 8, 16), mesh) == P("fsdp", "tensor", None)
    # 2 KV heads cannot be split 4 ways: that dimension stays whole.
    assert logical_to_spec(("embed", "kv_heads", "head_dim"), (64, 2, 16), mesh) == P("fsdp", None, None)
    assert logical_to_spec(("batch", None), (16, 5), mesh) == P(("data", "fsdp"), None)
    with pytest.raises(ValueError, match="do not match"):
        logical_to_spec(("embed",), (3, 4), mesh)


@pytest.mark.slow
def test_forward_on_8_fake_devices_matches_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    assert result["max_logit_diff"] < 1e-5
    assert result["max_logprob_diff"] < 1e-5
    assert result["params_equal"]
    # Parameters really are split: a q kernel [D, H, Dh] is 1/4 per device on fsdp=2 x tensor=2.
    assert result["q_spec"] == ["fsdp", "tensor"]  # (PartitionSpec drops trailing Nones)
    assert result["embed_spec"] == ["tensor", "fsdp"]
    assert result["q_shard_fraction"] == 0.25
    assert result["logprobs_sharded_rows"] == 1  # batch 4 over data x fsdp = 4: one row per shard
    # The one row layout: split over data x fsdp where the rows divide, whole on every device where not.
    assert result["rows_shard_shapes"] == {"even": [2, 6], "odd": [3, 6], "axis1": [2, 2, 3]}
    assert result["rows_round_trip"] and result["rows_constrained_in_jit"] == [2, 4]


def _check_on_mesh() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from r1zero.config import ModelConfig
    from r1zero.models import create_model, logprob_pass, positions_from_mask, to_host_arrays
    from r1zero.sharding import make_mesh, rows_to_global

    config = ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=8, qkv_bias=True)
    tokens = jax.random.randint(jax.random.key(0), (4, 12), 0, config.vocab_size)
    mask = jnp.ones((4, 12), bool).at[1, :3].set(False)
    out = {"devices": len(jax.devices())}

    results = []
    for mesh_config, devices in ((MeshConfig(1, 1, 1), jax.devices()[:1]), (MeshConfig(2, 2, 2), None)):
        mesh = make_mesh(mesh_config, devices)
        with jax.set_mesh(mesh):
            model = create_model(config, mesh, seed=0)
            logits = nnx.jit(lambda m, t, p, k: m(t, p, k)[0])(model, tokens, positions_from_mask(mask), mask)
            graphdef, params, rest = nnx.split(model, nnx.Param, ...)
            fn = logprob_pass(graphdef, rest, mesh, temperature=0.7, chunk_tokens=8)
            logp = fn(params, *rows_to_global((np.asarray(tokens), np.asarray(mask)), mesh))
        results.append((model, np.asarray(logits), np.asarray(logp), logp))

    (m1, l1, p1, _), (m8, l8, p8, logp8) = results
    out["max_logit_diff"] = float(np.abs(l1 - l8).max())
    out["max_logprob_diff"] = float(np.abs(p1 - p8).max())
    out["params_equal"] = all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(to_host_arrays(m1)), jax.tree.leaves(to_host_arrays(m8)))
    )
    q = m8.layers.attn.q[...]
    out["q_spec"] = list(q.sharding.spec)[1:]  # drop the stacked layer axis
    out["embed_spec"] = list(m8.embed[...].sharding.spec)
    out["q_shard_fraction"] = q.addressable_shards[0].data.size / q.size
    out["logprobs_sharded_rows"] = logp8.addressable_shards[0].data.shape[0]
    out.update(_rows_layout(make_mesh(MeshConfig(2, 2, 2))))
    return out


def _rows_layout(mesh) -> dict:
    """Rows per device for batches that do and do not divide over data x fsdp = 4, and round trips."""
    import jax
    import numpy as np

    from r1zero.sharding import constrain_rows, rows_to_global, rows_to_local

    host = {"even": np.arange(48).reshape(8, 6), "odd": np.arange(18).reshape(3, 6),
            "axis1": np.arange(48).reshape(2, 8, 3)}
    placed = {**rows_to_global({k: host[k] for k in ("even", "odd")}, mesh),
              "axis1": rows_to_global(host["axis1"], mesh, axis=1)}
    back = {**rows_to_local({k: placed[k] for k in ("even", "odd")}, mesh),
            "axis1": rows_to_local(placed["axis1"], mesh, axis=1)}
    inside = jax.jit(lambda x: constrain_rows(x * 2, mesh))(np.ones((8, 4)))
    return {"rows_shard_shapes": {k: list(v.addressable_shards[0].data.shape) for k, v in placed.items()},
            "rows_round_trip": all(np.array_equal(back[k], host[k]) for k in host),
            "rows_constrained_in_jit": list(inside.addressable_shards[0].data.shape)}


if __name__ == "__main__":
    print(json.dumps(_check_on_mesh()))
