"""The plain JAX decode loop the rollout benchmark compares against decodes the same model: from a
one-token prompt its greedy tokens are the sampler's (Qwen2: q/k/v biases, tied head; Llama 3:
rope scaling, untied head; Llama with attention_bias: q/k/v and output-projection biases)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from r1zero.bench import plain_decode
from r1zero.config import SamplingConfig
from r1zero.models import hf
from r1zero.sampler import sample
from tests.conftest import make_hf_checkpoint


@pytest.fixture(scope="module")
def llama_bias_dir(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "llama_bias", "llama", attention_bias=True)


@pytest.mark.parametrize("family", ["qwen2_dir", "llama_dir", "llama_bias_dir"])
def test_plain_greedy_decode_matches_the_sampler(family, request):
    model, _ = hf.load_model(request.getfixturevalue(family))
    first, steps = [5, 17, 101], 10
    config = SamplingConfig(temperature=0.0, max_new_tokens=steps, eos_ids=(), min_prompt_bucket=1)
    ours = sample(model, [[t] for t in first], jax.random.key(0), config, None).completion_tokens

    decode = plain_decode.make_decode(model, len(first), 1 + steps, steps, greedy=True)
    carry = plain_decode.start_carry(model, len(first), 1 + steps, start=0, tok_B=first)
    plain = np.asarray(decode(plain_decode.stacked_params(model), carry))
    np.testing.assert_array_equal(plain, ours)
    assert len(set(plain.ravel().tolist())) > 3  # the rows really decode (not one repeated token)
