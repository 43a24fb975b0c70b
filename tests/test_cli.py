"""`r1zero score` and `r1zero info` against transformers, and their error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from r1zero.cli import main
from r1zero.tokenizer import Tokenizer
from tests.conftest import hf_logits


def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_score_matches_transformers(arch, qwen2_dir, llama_dir, capsys):
    model_dir = {"qwen2": qwen2_dir, "llama": llama_dir}[arch]
    text = "Q: 47*86=? <think> 47*6=282 47*80=3760 </think> A: 4042"
    code, result, _ = run_cli(capsys, "score", "--model", str(model_dir), "--text", text)
    assert code == 0
    ids = Tokenizer(model_dir).encode(text)
    assert result["token_ids"] == ids and len(result["tokens"]) == len(ids)
    logits = hf_logits(model_dir, np.asarray([ids])).astype(np.float64)[0]
    m = logits.max(-1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    ref = logp[np.arange(len(ids) - 1), ids[1:]]
    assert result["logprobs"][0] is None
    np.testing.assert_allclose(result["logprobs"][1:], ref, atol=2e-5)
    assert result["total_logprob"] == pytest.approx(ref.sum(), abs=1e-3)


def test_info_counts_parameters_like_transformers(qwen2_dir, llama_dir, capsys):
    import transformers

    for model_dir in (qwen2_dir, llama_dir):
        code, result, _ = run_cli(capsys, "info", "--model", str(model_dir))
        assert code == 0
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
        assert result["parameters"] == hf_model.num_parameters()
        assert result["num_layers"] == hf_model.config.num_hidden_layers
    assert result["architecture"] == "llama" and result["rope_scaling"]["factor"] == 8.0


def test_errors_are_one_clear_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "info", "--model", str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{not json")
    code, _, err = run_cli(capsys, "train", "--workdir", str(tmp_path / "run"))
    assert code == 2 and "config.json: not valid JSON" in err


def test_anything_but_a_user_error_keeps_its_traceback(monkeypatch, capsys):
    """Out of memory, compile failures and internal errors are not the user's input: they propagate."""
    import jax

    from r1zero import cli

    def out_of_memory(args):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 1099511627776 bytes")

    monkeypatch.setattr(cli, "_info", out_of_memory)
    with pytest.raises(jax.errors.JaxRuntimeError, match="RESOURCE_EXHAUSTED"):
        cli.main(["info", "--model", "x"])
    monkeypatch.setattr(cli, "_info", lambda args: [][1])
    with pytest.raises(IndexError):
        cli.main(["info", "--model", "x"])


@pytest.mark.slow
def test_console_script_is_installed(qwen2_dir):
    """The `r1zero` entry point (and `python -m r1zero`) run as a user would call them."""
    proc = subprocess.run([sys.executable, "-m", "r1zero", "info", "--model", str(qwen2_dir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["architecture"] == "qwen2"


def test_sample_json_is_reproducible_and_consistent(qwen2_dir, capsys):
    argv = ["sample", "--model", str(qwen2_dir), "--prompt", "Q: 47*86=?", "--n", "3",
            "--max-new-tokens", "6", "--seed", "4", "--json"]
    code, first, _ = run_cli(capsys, *argv)
    assert code == 0
    _, again, _ = run_cli(capsys, *argv)
    assert first == again and len(first["completions"]) == 3
    tok = Tokenizer(qwen2_dir)
    for c in first["completions"]:
        assert len(c["token_ids"]) == len(c["logprobs"]) <= 6
        assert all(lp <= 0 for lp in c["logprobs"])
        ids = c["token_ids"][:-1] if c["finish_reason"] == "eos" else c["token_ids"]
        assert c["text"] == tok.decode(ids)
    assert main(argv[:-1]) == 0  # without --json: readable text
    assert capsys.readouterr().out.count("--- sample") == 3


@pytest.mark.slow
def test_train_command_runs_and_reports(tmp_path, capsys):
    from pathlib import Path

    config = str(Path(__file__).parents[1] / "configs" / "max_digits.py")
    argv = ["train", "--config", config, "--workdir", str(tmp_path), "--steps", "3", "--seed", "1",
            "--set", "task.eval_size=32", "--set", "sampling.num_samples=4", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "held-out accuracy, greedy" in out and "steps 3" in out
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["seed"] == 1 and saved["task"]["eval_size"] == 32 and saved["sampling"]["num_samples"] == 4
    code = main(["train", "--config", config, "--workdir", str(tmp_path / "x"), "--set", "optim.lr=1"])
    assert code == 2 and "unknown config key 'optim.lr'" in capsys.readouterr().err


def test_a_full_disk_is_one_line_that_names_it(monkeypatch, capsys):
    import errno

    from r1zero import cli

    def full(args):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints/200/state/d/0.tmp")
        except OSError as e:  # as orbax reports it: wrapped in its own error
            raise RuntimeError("Failed to write array data: tensorstore error") from e

    monkeypatch.setattr(cli, "_info", full)
    assert cli.main(["info", "--model", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the disk is full (No space left on device: /runs/x/checkpoints/200" in err
