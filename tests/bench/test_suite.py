"""The GPU suite runs end to end in its tiny mode on the CPU: every section writes its numbers
(read by hand on a GPU; here only that they exist and are consistent), none fails."""

from __future__ import annotations

import json

import pytest

from r1zero.bench import suite


@pytest.mark.slow
def test_the_suite_runs_every_section_in_tiny_mode(tmp_path):
    out = tmp_path / "suite.jsonl"
    suite.main(["--tiny", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert not [r for r in rows if "error" in r], rows
    sections = [r["section"] for r in rows]
    assert sections[0] == "setup" and sections[-1] == "done"
    sampler_rows = [r for r in rows if r["section"] == "sampler"]
    assert [r["batch"] for r in sampler_rows] == [2, 4]
    for r in sampler_rows:
        assert r["r1zero_tok_s"] > 0 and r["plain_jax_tok_s"] > 0 and r["transformers_tok_s"] > 0
        assert r["vs_transformers"] == pytest.approx(r["r1zero_tok_s"] / r["transformers_tok_s"])
        assert r["roofline_fraction"] == pytest.approx(r["r1zero_tok_s"] / r["roofline_tok_s"])
    (train,) = [r for r in rows if r["section"] == "train"]
    assert train["tokens_per_s"] == pytest.approx(4 * 32 / train["step_s"]) and 0 < train["mfu"] < 1
    (grpo,) = [r for r in rows if r["section"] == "grpo"]
    assert grpo["lib"] == "r1zero" and grpo["point"] == "tiny 2x2 N=8 fixed" and grpo["step_s"] > 0
