"""Qwen2.5-0.5B architecture (random-init shapes for benchmarks; real weights load via hf.load_model)."""

from r1zero.config import ModelConfig


def get_config() -> ModelConfig:
    return ModelConfig(architecture="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                       num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64, rope_theta=1e6,
                       qkv_bias=True, tie_embeddings=True, max_position_embeddings=32768)
