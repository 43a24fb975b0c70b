"""r1zero.memory: per-device sizes from a config alone, against arrays of the sizes they name
(parameter shards themselves are checked on 8 fake devices in test_scale)."""

from __future__ import annotations

import dataclasses

import jax
import pytest

from r1zero import memory
from r1zero.config import GRPOConfig, MeshConfig, ModelConfig, SamplingConfig, TrainConfig
from r1zero.errors import UserError
from r1zero.models import KVCache, abstract_model
from r1zero.models.factory import param_bytes_per_device

MODEL = ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4, num_kv_heads=2,
                    head_dim=8, param_dtype="bfloat16", compute_dtype="bfloat16")


def test_mesh_sizes_take_the_devices_left():
    config = TrainConfig(mesh=MeshConfig(data=2, fsdp=-1, tensor=1))
    assert memory.mesh_shape(config, 8) == {"data": 2, "fsdp": 4, "tensor": 1}
    with pytest.raises(UserError, match="does not fit 6 devices"):
        memory.mesh_shape(TrainConfig(mesh=MeshConfig(data=4, fsdp=-1)), 6)


def test_every_item_is_the_size_of_what_it_counts():
    config = TrainConfig(model=MODEL, prompts_per_rollout=4, grpo=GRPOConfig(beta=0.04),
                         sampling=SamplingConfig(num_samples=2, max_prompt_len=16, max_new_tokens=8))
    mesh = {"data": 1, "fsdp": 2, "tensor": 1}
    got = {k: v * memory.GIB for k, v in memory.per_device(config, MODEL, mesh).items()}
    whole = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_model(MODEL)[1]))
    split = param_bytes_per_device(MODEL, mesh)
    assert split < whole  # fsdp=2 halves the large matrices
    assert got["params"] == got["gradients"] == got["reference"] == split and got["optimizer"] == 2 * split
    assert got["decode_weights"] == whole  # `auto` decodes without the fsdp split
    cache = KVCache.create(MODEL, 4 * 2, 16 + 8)  # every row's keys and values, rows split over data x fsdp
    assert got["kv_cache"] == sum(x.nbytes for x in (*cache.k, *cache.v)) / 2
    assert got["rollout_peak"] == pytest.approx(4 * split + whole + got["kv_cache"])
    no_ref = dataclasses.replace(config, grpo=GRPOConfig(beta=0.0))
    assert memory.per_device(no_ref, MODEL, mesh)["reference"] == 0


def test_decoding_in_phases_counts_the_cache_the_last_phase_grows_from():
    """64 new tokens decode in phases ending at 32 and 64: growing the cache to 16 + 64 slots holds
    the 16 + 32 slot cache beside it; one phase holds only the full cache."""
    sampling = SamplingConfig(num_samples=2, max_prompt_len=16, max_new_tokens=64)
    mesh = {"data": 1, "fsdp": 1, "tensor": 1}

    def nbytes(slots):
        cache = KVCache.create(MODEL, 8, slots)
        return sum(x.nbytes for x in (*cache.k, *cache.v))

    for phases, expected in ((True, nbytes(16 + 64) + nbytes(16 + 32)), (False, nbytes(16 + 64))):
        config = TrainConfig(model=MODEL, prompts_per_rollout=4,
                             sampling=dataclasses.replace(sampling, decode_phases=phases))
        assert memory.per_device(config, MODEL, mesh)["kv_cache"] * memory.GIB == expected
