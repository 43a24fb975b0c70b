"""Llama-3.2-1B architecture (random-init shapes for benchmarks; real weights load via hf.load_model)."""

from r1zero.config import ModelConfig, RopeScaling


def get_config() -> ModelConfig:
    return ModelConfig(architecture="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                       num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64, rope_theta=500000.0,
                       rope_scaling=RopeScaling(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                                original_max_position_embeddings=8192),
                       rms_norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=131072)
