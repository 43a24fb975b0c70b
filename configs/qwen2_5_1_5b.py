"""Qwen2.5-1.5B architecture (random-init shapes for benchmarks; real weights load via hf.load_model)."""

from r1zero.config import ModelConfig


def get_config() -> ModelConfig:
    return ModelConfig(architecture="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                       num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128, rope_theta=1e6,
                       qkv_bias=True, tie_embeddings=True, max_position_embeddings=32768)
