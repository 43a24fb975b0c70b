"""The aha run (configs/aha.py), shortened, and its bases: each shipped base (base_aha, base_aha_guess) is
what its recipe makes from its start, the priming grid's bases differ only in the share of checked
documents, the guess-first twins only in the worked documents, and a short run writes the
self-correction metrics, plots and report lines."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import pytest

from r1zero.cli import main
from r1zero.config import PretrainConfig, from_dict, load_config_file

ROOT = Path(__file__).parents[1]


def test_grid_bases_differ_only_in_the_share_of_checked_documents():
    aha = load_config_file(str(ROOT / "configs" / "pretrain_aha.py"))
    assert (aha.corpus.self_check, aha.corpus.tagged_mix[2]) == (0.3, 0.3)
    for name, share in (("pretrain_aha_check5.py", 0.05), ("pretrain_aha_check0.py", 0.0)):
        other = load_config_file(str(ROOT / "configs" / name))
        c = other.corpus
        assert c.self_check == pytest.approx(share) and c.tagged_mix[2] == pytest.approx(share)
        assert c.worked + c.self_check == pytest.approx(aha.corpus.worked + aha.corpus.self_check)
        assert sum(c.tagged_mix) == pytest.approx(sum(aha.corpus.tagged_mix))
        same = dataclasses.replace(c, worked=aha.corpus.worked, self_check=aha.corpus.self_check,
                                   tagged_mix=aha.corpus.tagged_mix)
        assert dataclasses.replace(other, corpus=same) == aha  # nothing else differs: start, seed, steps, tokens


def test_guess_first_twins_differ_only_in_the_worked_documents():
    guess = load_config_file(str(ROOT / "configs" / "pretrain_aha_guess.py"))
    worked = load_config_file(str(ROOT / "configs" / "pretrain_aha_guess_worked.py"))
    aha = load_config_file(str(ROOT / "configs" / "pretrain_aha.py"))
    assert guess.corpus.first_pass == worked.corpus.first_pass == "guess" and Path(guess.init_dir).name == "base_aha"
    assert (guess.corpus.worked, guess.corpus.tagged_mix[1]) == (0, 0)
    assert dataclasses.replace(worked.corpus, first_pass="worked") == aha.corpus  # base_aha's corpus, guessed
    g, w = guess.corpus, worked.corpus  # the worked share answers directly instead; checks are unchanged
    assert g.direct == pytest.approx(w.direct + w.worked) and g.self_check == w.self_check
    assert g.tagged_mix == pytest.approx((w.tagged_mix[0] + w.tagged_mix[1], 0, w.tagged_mix[2]))
    assert dataclasses.replace(guess, corpus=w) == worked  # nothing else differs


@pytest.mark.parametrize("asset, recipe_file, start", [("base_aha", "pretrain_aha.py", "base_mult2"),
                                                       ("base_aha_guess", "pretrain_aha_guess.py", "base_aha")])
def test_shipped_aha_base_is_its_recipe_continued_from_its_start(asset, recipe_file, start):
    import shlex

    from r1zero.cli import build_parser
    from r1zero.models import hf
    from r1zero.pretrain import corpus_loss
    from r1zero.tokenizer import Tokenizer

    base = ROOT / "r1zero" / "assets" / asset
    recipe = json.loads((base / "pretrain.json").read_text())
    shipped = from_dict(PretrainConfig, recipe["config"])
    config = load_config_file(str(ROOT / "configs" / recipe_file))
    assert Path(shipped.init_dir).name == Path(config.init_dir).name == start
    assert dataclasses.replace(shipped, init_dir=config.init_dir) == config
    args = build_parser().parse_args(shlex.split(recipe["command"])[1:])
    assert args.config.endswith(f"configs/{recipe_file}") and (args.set, args.steps, args.seed) == ([], None, None)
    model, _ = hf.load_model(base)
    loss = corpus_loss(model, Tokenizer(base), config)
    assert loss == pytest.approx(recipe["eval_loss"], rel=1e-4)


@pytest.mark.slow
def test_short_aha_run_writes_the_self_correction_metrics_and_plots(tmp_path):
    workdir = tmp_path / "aha"
    argv = ["train", "--config", str(ROOT / "configs" / "aha.py"), "--workdir", str(workdir), "--steps", "2",
            "--set", "eval_every=2", "--set", "task.eval_size=8", "--set", "prompts_per_rollout=2", "--no-progress"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(argv) == 0
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    keys = ("check_rate", "check_rate_correct", "accuracy_checked", "verified_right", "check_false_alarm",
            "check_miss", "check_exact", "wrong_to_right", "right_to_wrong", "wrong_to_wrong")
    for row in rows[1:]:  # every rollout
        assert all(f"self_check/{k}" in row for k in keys), row.keys()
    for row in (rows[0], rows[-1]):  # the epoch-0 audit and the last evaluation
        assert "eval/greedy_self_check/check_rate" in row and "eval/sampled_self_check/wrong_to_right" in row
    audit = json.loads((workdir / "audit_epoch0.json").read_text())
    assert "eval/sampled_self_check/check_exact" in audit["metrics"]
    for name in ("self_check", "self_correction"):
        assert (workdir / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    assert "self-correction (a check rejects" in (workdir / "report.md").read_text()
    aha = json.loads((workdir / "emergence.json").read_text())["aha"]["aha"]
    assert aha["window_steps"] == 1 and 0 <= aha["self_correction_start"] <= 1
    assert "check rate (the working checks its answer)" in out.getvalue()
