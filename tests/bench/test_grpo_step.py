"""The GRPO step benchmark: its shared inputs are what every library is told they are (prompts of
exactly 32 tokens, a model transformers-loadable directory, realistic lengths that really vary), its
FLOP count is the model's, and a run end to end produces the table (numbers read by hand)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from r1zero import hostalloc
from r1zero.bench import grpo_step as gs


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo_bench")
    tok = gs.make_tokenizer(root / "tokenizer")
    return root, tok, gs.make_prompts(tok, 8)


def test_prompts_are_exactly_32_tokens_and_round_trip(work):
    _, tok, prompts = work
    assert len(set(prompts)) == 8
    for text in prompts:
        ids = tok.encode(text).ids
        assert len(ids) == gs.PROMPT_LEN and tok.decode(ids) == text and gs.EOS_ID not in ids


def test_the_benchmarks_qwen_shape_is_the_rollout_benchmarks():
    """grpo_step keeps its shapes as HF config dicts (its peers import it without jax); the 0.5B one
    must be the shape the other benchmarks call Qwen2.5-0.5B."""
    from r1zero.bench.rollout import SIZES
    from r1zero.models.hf import hf_config_dict

    hf = hf_config_dict(SIZES["0.5b"])
    assert gs.SHAPES["qwen2.5-0.5b"] == {k: hf[k] for k in gs.SHAPES["qwen2.5-0.5b"]}


def test_update_flops_count_every_weight_three_times_per_token():
    """6 x weights x tokens for the layers (prompt + completion) and for the output layer (completion
    only), plus attention: checked against the parameter count of the model r1zero builds."""
    from flax import nnx

    from r1zero.config import MeshConfig
    from r1zero.models import create_model
    from r1zero.sharding import make_mesh

    model = create_model(gs.model_config("small"), make_mesh(MeshConfig()), seed=0)
    layer_weights = sum(x.size for path, x in nnx.to_flat_state(nnx.state(model.layers, nnx.Param))
                        if "norm" not in str(path) and "bias" not in str(path))
    rows, completion = 64, 64 * 64
    tokens = rows * (gs.PROMPT_LEN + 64)
    no_attention = 6 * layer_weights * tokens + 6 * model.embed[...].size * completion
    got = gs.update_flops(gs.SHAPES["small"], rows, completion)
    attention = got - no_attention
    assert 0 < attention < 0.05 * got  # scores and values: a few percent at 96 tokens


def test_realistic_lengths_end_early_with_a_tail_at_the_budget(work):
    root, _, prompts = work
    point = gs.Point(shape="tiny", prompts=4, G=8, max_new=64, lengths="realistic")
    model_dir, info = gs.build_model(root, point, prompts, root / "tokenizer")
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    assert abs(info["at_budget"] - gs.END_FRACTION) <= 0.04, info
    assert info["median_length"] < 32, info  # most rows end well before the budget
    # The same directory, as a library loads it: r1zero's sampler sees the lengths recorded.
    from r1zero.models import hf

    model, _ = hf.load_model(model_dir)
    lengths = gs.sampled_lengths(model, model_dir, prompts, point)
    assert np.mean(lengths >= 64) == pytest.approx(info["at_budget"]) and lengths.min() < lengths.max()


@pytest.mark.slow
def test_the_benchmark_runs_r1zero_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    gs.main(["--shape", "tiny", "--prompts", "2", "--G", "2", "--max-new", "8", "--steps", "3", "--rounds", "2",
             "--micro-batches", "2", "--work", str(tmp_path / "work"), "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    runs = [r for r in rows if r["kind"] == "run"]
    (summary,) = [r for r in rows if r["kind"] == "summary"]
    assert len(runs) == 2 and all(len(r["step_s"]) == 2 for r in runs)  # the compiling first step left out
    assert all(t == 2 * 2 * 8 for r in runs for t in r["completion_tokens"])  # fixed: every row runs the budget
    assert summary["samples"] == 4 and summary["step_min"] <= summary["step_s"] <= summary["step_max"]
    assert summary["gen_s"] + summary["update_s"] <= summary["step_s"] and 0 < summary["update_mfu"] < 1
    # The worker ran under the allocator the r1zero command picks here, and the table names it.
    expected = (hostalloc.allocator_env(dict(os.environ)) or os.environ).get("R1ZERO_ALLOCATOR", "system")
    assert {r["allocator"] for r in runs} == {expected} == {summary["allocator"]}
    assert f"| tiny 2x2 N=8 fixed | r1zero ({expected}) |" in capsys.readouterr().out


def test_a_kl_term_adds_the_reference_pass(tmp_path):
    """--beta: every library keeps a reference; r1zero's reference log-prob pass (on the update's
    micro-batches, prompts shared) is timed apart from the update."""
    out = tmp_path / "bench.jsonl"
    gs.main(["--shape", "tiny", "--prompts", "2", "--G", "2", "--max-new", "8", "--steps", "3", "--rounds", "1",
             "--micro-batches", "2", "--share-prompts", "--beta", "0.04", "--work", str(tmp_path / "work"),
             "--out", str(out)])
    (run,) = [json.loads(line) for line in out.read_text().splitlines() if '"run"' in line]
    assert run["point"] == "tiny 2x2 N=8 fixed beta=0.04"
    assert len(run["logprob_s"]) == 2 and all(t > 0 for t in run["logprob_s"])


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="--sweep"):
        gs.main(["--sweep", "everything", "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match="no such file"):
        gs.main(["--trl-python", str(tmp_path / "missing"), "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match="--beta must be a finite number >= 0"):
        gs.main(["--beta", "-1", "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match="--G at least 2"):
        gs.main(["--G", "1", "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match="--warmup"):
        gs.main(["--steps", "1", "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--micro-batches 3 must divide the rows .* \[64\]"):
        gs.main(["--micro-batches", "3", "--work", str(tmp_path)])
