"""Pretraining: deterministic, it learns, and the shipped base is what its recipe says."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from r1zero.cli import main
from r1zero.config import CorpusConfig, ModelConfig, OptimConfig, PretrainConfig, from_dict, load_config_file, to_dict
from r1zero.pretrain import corpus_loss, pretrain

ROOT = Path(__file__).parents[1]
BASE = ROOT / "r1zero" / "assets" / "base_mult2"

TINY = PretrainConfig(
    model=ModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                      qkv_bias=True, tie_embeddings=True),
    corpus=CorpusConfig(), optim=OptimConfig(learning_rate=1e-2, warmup_steps=0, schedule="constant"),
    steps=8, batch_size=4, seq_len=192, eval_every=4, eval_rows=4)


def test_pretraining_is_deterministic_and_learns(tmp_path):
    a = pretrain(TINY, tmp_path / "a", progress=False)
    b = pretrain(TINY, tmp_path / "b", progress=False)
    wa, wb = (load_file(tmp_path / d / "model" / "model.safetensors") for d in "ab")
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert a["eval_loss"] == b["eval_loss"]
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/loss" in r] == [4, 8]
    vocab = json.loads((tmp_path / "a" / "model" / "config.json").read_text())["vocab_size"]
    assert rows[-1]["eval/loss"] < math.log(vocab) - 0.5  # better than uniform over the vocabulary
    other = pretrain(dataclasses.replace(TINY, seed=1), tmp_path / "c", progress=False)
    assert other["eval_loss"] != a["eval_loss"]


def test_continued_pretraining_starts_from_init_dir_and_checks_it(tmp_path):
    from r1zero.errors import MissingFileError, UserError

    pretrain(TINY, tmp_path / "a", progress=False)
    init = tmp_path / "a" / "model"
    frozen = dataclasses.replace(TINY, init_dir=str(init), optim=dataclasses.replace(TINY.optim, learning_rate=0.0))
    pretrain(frozen, tmp_path / "b", progress=False)
    wa, wb = (load_file(tmp_path / d / "model" / "model.safetensors") for d in "ab")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)  # learning rate 0: exactly the model it started from
    more = dataclasses.replace(TINY, init_dir=str(init), seed=1, corpus=CorpusConfig(digits=3, digits_b=2))
    fresh = dataclasses.replace(more, init_dir="")
    continued, scratch = (pretrain(c, tmp_path / n, progress=False) for c, n in ((more, "c"), (fresh, "d")))
    assert continued["eval_loss"] < scratch["eval_loss"]  # 8 steps on top of 8 beat 8 from a random init
    assert pretrain(more, tmp_path / "e", progress=False)["eval_loss"] == continued["eval_loss"]  # deterministic
    with pytest.raises(UserError, match="hidden_size=48"):
        pretrain(dataclasses.replace(more, model=dataclasses.replace(TINY.model, hidden_size=48)), tmp_path / "f",
                 progress=False)
    (init / "tokenizer.json").write_text((init / "tokenizer.json").read_text().replace('"7"', '"§"'))
    with pytest.raises(UserError, match="not the corpus's character tokenizer"):
        pretrain(more, tmp_path / "g", progress=False)
    (init / "tokenizer.json").unlink()
    with pytest.raises(MissingFileError, match="has no tokenizer.json"):
        pretrain(more, tmp_path / "h", progress=False)


def test_pretrain_command_writes_a_loadable_base(tmp_path, capsys):
    from r1zero.models import hf
    from r1zero.tokenizer import Tokenizer

    config = tmp_path / "tiny.py"
    config.write_text("from r1zero.config import *\n\ndef get_config():\n    return from_dict(PretrainConfig, "
                      + repr(to_dict(TINY)) + ")\n")
    argv = ["pretrain", "--config", str(config), "--workdir", str(tmp_path / "run"), "--steps", "2",
            "--set", "corpus.tagged=1.0", "--no-progress"]
    assert main(argv) == 0
    assert "evaluation loss" in capsys.readouterr().out
    out = tmp_path / "run" / "model"
    recipe = json.loads((out / "pretrain.json").read_text())
    assert recipe["steps"] == 2 and recipe["config"]["corpus"]["tagged"] == 1.0
    assert recipe["command"].startswith("r1zero pretrain --config")
    model, _ = hf.load_model(out)
    tok = Tokenizer(out)
    assert [tok.decode([i]) for i in tok.encode("<think>7*8</think>")] == ["<think>", "7", "*", "8", "</think>"]
    loss = corpus_loss(model, tok, from_dict(PretrainConfig, recipe["config"]))
    assert loss == pytest.approx(recipe["eval_loss"], rel=1e-5)
    from r1zero import pretrain as pretrain_mod

    compiled = pretrain_mod._lm_loss._cache_size()
    assert corpus_loss(model, tok, from_dict(PretrainConfig, recipe["config"])) == loss
    assert pretrain_mod._lm_loss._cache_size() == compiled  # the same program again, not a new jit


def test_shipped_base_scores_its_corpus_at_the_recorded_loss():
    from r1zero.models import hf
    from r1zero.tokenizer import Tokenizer

    recipe = json.loads((BASE / "pretrain.json").read_text())
    config = from_dict(PretrainConfig, recipe["config"])
    # The shipped base is exactly configs/pretrain_base.py (the command in pretrain.json).
    assert load_config_file(str(ROOT / "configs" / "pretrain_base.py")) == config
    import shlex

    from r1zero.cli import build_parser

    args = build_parser().parse_args(shlex.split(recipe["command"])[1:])
    assert (args.command, args.config, args.set, args.steps, args.seed) == ("pretrain", "configs/pretrain_base.py", [],
                                                                           None, None)
    model, model_config = hf.load_model(BASE)
    assert dataclasses.replace(model_config, vocab_size=config.model.vocab_size) == config.model
    loss = corpus_loss(model, Tokenizer(BASE), config)
    assert loss == pytest.approx(recipe["eval_loss"], rel=1e-4)
    assert loss < 1.0  # nats per token: far below uniform (log 77 = 4.3)


def test_shipped_base_agrees_with_transformers():
    from tests.conftest import hf_logits

    from r1zero.models import hf
    from r1zero.tokenizer import Tokenizer

    tok = Tokenizer(BASE)
    ids = tok.encode("User: 47*86=? Assistant: <think> 47*6=282 47*80=3760 282+3760=4042 </think> <answer> 4042")
    model, _ = hf.load_model(BASE)
    ours = np.asarray(_logits(model, ids))
    theirs = hf_logits(BASE, [ids])
    assert np.abs(ours - theirs).max() < 1e-4 * np.abs(theirs).max()


def _logits(model, ids):
    import jax.numpy as jnp

    from r1zero.models import positions_from_mask

    tokens = jnp.asarray([ids], jnp.int32)
    mask = jnp.ones_like(tokens, bool)
    h, _ = model.hidden_states(tokens, positions_from_mask(mask), mask)
    return model.logits(h)
