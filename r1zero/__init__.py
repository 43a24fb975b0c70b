"""r1zero: DeepSeek-R1-Zero-style pure reinforcement learning in JAX."""

__version__ = "0.2.0"
