"""The plain JAX decode loop the rollout benchmark compares against decodes the same model: from a
one-token prompt its greedy tokens are the sampler's."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from r1zero.bench import plain_decode
from r1zero.config import SamplingConfig
from r1zero.models import hf
from r1zero.sampler import sample


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_plain_greedy_decode_matches_the_sampler(family, qwen2_dir, llama_dir):
    model, _ = hf.load_model(qwen2_dir if family == "qwen2" else llama_dir)
    first, steps = [5, 17, 101], 10
    config = SamplingConfig(temperature=0.0, max_new_tokens=steps, eos_ids=(), min_prompt_bucket=1)
    ours = sample(model, [[t] for t in first], jax.random.key(0), config, None).completion_tokens

    decode = plain_decode.make_decode(model, len(first), 1 + steps, steps, greedy=True)
    carry = plain_decode.start_carry(model, len(first), 1 + steps, start=0, tok_B=first)
    plain = np.asarray(decode(plain_decode.stacked_params(model), carry)[5])
    np.testing.assert_array_equal(plain, ours)
    assert len(set(plain.ravel().tolist())) > 3  # the rows really decode (not one repeated token)
