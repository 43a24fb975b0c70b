"""The rollout benchmark runs end to end on a small shape (its numbers are read by hand, not here):
all implementations decode every requested token, and the GRPO-shaped mode samples B/G prompts."""

from __future__ import annotations

import json

import pytest

from r1zero.bench import rollout


@pytest.mark.slow
def test_rollout_benchmark_runs_side_by_side(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    rollout.main(["--batch", "4", "--group", "2", "--prompt-len", "8", "--new-tokens", "4", "--repeats", "1"])
    rows = [json.loads(line) for line in (tmp_path / "rollout.jsonl").read_text().splitlines()]
    setup, row = rows
    assert setup["kind"] == "setup" and setup["dtype"] == "float32"
    assert row["batch"] == 4 and row["group"] == 2
    assert row["r1zero_tok_s"] > 0 and row["transformers_tok_s"] > 0
    assert row["ratio"] == pytest.approx(row["r1zero_tok_s"] / row["transformers_tok_s"], rel=0.02)
    # KV cache: 2 (k, v) x 4 layers x 4 rows x 2 KV heads x (8 + 4) slots x 32 wide x 4 bytes.
    assert row["kv_cache_mib"] == round(2 * 4 * 4 * 2 * 12 * 32 * 4 / 2**20, 1)
    # Layer weights, sliced once per call: 4 x (2 norms 256 + q 256x256 + k, v 256x64 + o 256x256
    # + biases 256 + 64 + 64 + MLP 3 x 256x768) x 4 bytes; the compiled temp memory holds that copy
    # and the cache.
    per_layer = 2 * 256 + 2 * 256 * 256 + 2 * 256 * 64 + 384 + 3 * 256 * 768
    assert row["layer_weights_mib"] == round(4 * per_layer * 4 / 2**20, 1)
    assert row["temp_mib"] > row["layer_weights_mib"] + row["kv_cache_mib"]
    # Decode steps side by side with the plain JAX loop (timings only: read by hand).
    assert row["plain_jax_decode_ms_step"] > 0
    if row["r1zero_decode_ms_step"] > 0:  # a difference of two timings: noise can make it <= 0 here
        expected = row["plain_jax_decode_ms_step"] / row["r1zero_decode_ms_step"]
        assert row["decode_vs_plain"] == pytest.approx(expected, abs=0.01)
    assert "rollout throughput" in capsys.readouterr().out
