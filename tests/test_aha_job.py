"""The aha run (configs/aha.py), shortened, and its priming grid's bases: the shipped base_aha is what
configs/pretrain_aha.py makes, the grid's bases differ only in the share of checked documents, and a
short run writes the self-correction metrics, plots and report lines."""

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
BASE = ROOT / "r1zero" / "assets" / "base_aha"


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


def test_shipped_aha_base_is_its_recipe_continued_from_base_mult2():
    from r1zero.models import hf
    from r1zero.pretrain import corpus_loss
    from r1zero.tokenizer import Tokenizer

    recipe = json.loads((BASE / "pretrain.json").read_text())
    shipped = from_dict(PretrainConfig, recipe["config"])
    config = load_config_file(str(ROOT / "configs" / "pretrain_aha.py"))
    assert Path(shipped.init_dir).name == Path(config.init_dir).name == "base_mult2"
    assert dataclasses.replace(shipped, init_dir=config.init_dir) == config
    import shlex

    from r1zero.cli import build_parser

    args = build_parser().parse_args(shlex.split(recipe["command"])[1:])
    assert args.config.endswith("configs/pretrain_aha.py") and (args.set, args.steps, args.seed) == ([], None, None)
    model, _ = hf.load_model(BASE)
    loss = corpus_loss(model, Tokenizer(BASE), config)
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
