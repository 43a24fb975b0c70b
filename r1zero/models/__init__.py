"""Flax NNX decoder models (Qwen2/Qwen2.5, Llama 3), log-probabilities and Hugging Face interop."""

from r1zero.models.decoder import Decoder, KVCache, SharedPrefix, param_count, positions_from_mask
from r1zero.models.factory import abstract_model, create_model, model_from_arrays, to_host_arrays
from r1zero.models.logprobs import logprob_pass, per_token_logprobs

__all__ = [
    "Decoder",
    "KVCache",
    "abstract_model",
    "create_model",
    "logprob_pass",
    "model_from_arrays",
    "param_count",
    "per_token_logprobs",
    "SharedPrefix",
    "positions_from_mask",
    "to_host_arrays",
]
