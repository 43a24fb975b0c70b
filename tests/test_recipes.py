"""The recipes in configs/recipes: each runs one GRPO step with its own family shrunk to a tiny
random model (so a typo in a recipe fails here), names the architecture its model really has
(parameter counts as the model cards state them), and `r1zero info` sizes each one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from r1zero.cli import main
from r1zero.config import ModelConfig, TrainConfig, load_config_file
from r1zero.models import abstract_model, param_count

ROOT = Path(__file__).parents[1]
RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.py"))
# Model cards: Qwen2.5-0.5B "0.49B", -1.5B and -Math-1.5B "1.54B", -3B "3.09B", Qwen3-1.7B-Base
# "1.7B" (1.72B in its safetensors index), Gemma 3 270M "268M" (as the converted GGUF has it).
PUBLISHED = {"Qwen/Qwen2.5-0.5B": 0.49e9, "Qwen/Qwen2.5-1.5B": 1.54e9, "Qwen/Qwen2.5-Math-1.5B": 1.54e9,
             "Qwen/Qwen2.5-3B": 3.09e9, "Qwen/Qwen2.5-Coder-0.5B": 0.49e9, "Qwen/Qwen3-1.7B-Base": 1.72e9, "google/gemma-3-270m": 0.268e9}


def test_every_recipe_is_listed_and_names_its_source_aim_and_hardware():
    assert len(RECIPES) == 7
    for path in RECIPES:
        text = path.read_text()
        for word in ("Source:", "Aims at:", "Hardware:"):
            assert word in text, (path.name, word)
        config = load_config_file(str(path))
        assert isinstance(config, TrainConfig) and config.model_dir in PUBLISHED, path.name
        count = param_count(abstract_model(config.model)[1])
        assert abs(count - PUBLISHED[config.model_dir]) < 0.01 * PUBLISHED[config.model_dir], (path.name, count)


def shrink(model: ModelConfig) -> ModelConfig:
    """The same family (every flag, the dtypes, remat) at a tiny size; sliding layers keep sliding."""
    layer_types = ("sliding", "full") if model.layer_types else ()
    kv = min(model.num_kv_heads, 2)
    return dataclasses.replace(model, hidden_size=32, intermediate_size=48, num_layers=2, num_kv_heads=kv,
                               num_heads=model.num_heads // model.num_kv_heads * kv, head_dim=8, layer_types=layer_types,
                               sliding_window=4 if layer_types else model.sliding_window,
                               query_pre_attn_scalar=8 if model.query_pre_attn_scalar else None)


def tiny_run(config: TrainConfig, math_dir: Path, code_file: Path | None = None) -> TrainConfig:
    """One step of `config` on a tiny random model: its rollout split (minibatches x micro-batches)
    kept, every size that only costs time cut down, prompts cut from the left to fit."""
    rows = config.num_minibatches * config.optim.micro_batches
    task = dataclasses.replace(config.task, train_size=min(config.task.train_size, 64), eval_size=2,
                               path={"math": str(math_dir), "code": str(code_file)}.get(config.task.dataset,
                                                                                        config.task.path))
    return dataclasses.replace(
        config, model_dir="", model=shrink(config.model), steps=config.num_minibatches, eval_every=0,
        prompts_per_rollout=max(2, rows // 2), task=task,
        sampling=dataclasses.replace(config.sampling, num_samples=2, max_new_tokens=6, max_prompt_len=48,
                                     truncate_prompts=True))


@pytest.fixture(scope="module")
def math_dir(tmp_path_factory) -> Path:
    """MATH-format files (problem, solution with a \\boxed answer), as the Dr. GRPO recipe reads."""
    d = tmp_path_factory.mktemp("math")
    for split in ("train", "test"):
        rows = [{"problem": f"What is {a} + {a}?", "solution": f"It is \\boxed{{{2 * a}}}."} for a in range(40)]
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.fixture(scope="module")
def code_file(tmp_path_factory) -> Path:
    """Code problems in the code format: functions with asserts and a stdin/stdout one."""
    path = tmp_path_factory.mktemp("code") / "problems.jsonl"
    rows = [{"prompt": f"Write add{a}(x) returning x + {a}.", "entry_point": f"add{a}",
             "tests": [f"assert add{a}(1) == {1 + a}", f"assert add{a}(-{a}) == 0"]} for a in range(30)]
    rows.append({"prompt": "Print the sum of the input's numbers.", "inputs": ["1 2\n"], "outputs": ["3\n"]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_each_recipe_runs_a_step_with_its_family_shrunk(path, math_dir, code_file, tmp_path):
    from r1zero.train import train

    recipe = load_config_file(str(path))
    config = tiny_run(recipe, math_dir, code_file)
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == config.steps and summary["rollouts"] == 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "loss" in r]
    assert len(trained) == recipe.num_minibatches and all(r["grad_norm"] >= 0 for r in trained)
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["grpo"] == json.loads(json.dumps(dataclasses.asdict(recipe.grpo)))  # the recipe's objective ran


def test_info_prints_each_recipe_with_memory_per_device(capsys):
    assert main(["info", "--config", *map(str, RECIPES), "--devices", "8"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| configs/") or ".py |" in line]
    assert len(lines) == len(RECIPES)
    for line, path in zip(lines, RECIPES):
        cells = [c.strip() for c in line.strip("|").split("|")]
        config = load_config_file(str(path))
        assert cells[1] == config.model_dir and cells[3] == "(1, 8, 1)"
        held, rollout, update = map(float, cells[5:8])
        assert 0 < held < update and held < rollout < 80  # fits an 80 GB device, as the recipes say


def test_a_recipe_pointed_at_another_model_is_refused_before_the_run_directory(tmp_path):
    from r1zero.errors import UserError
    from r1zero.train import train

    base = ROOT / "r1zero" / "assets" / "base_mult2"  # a qwen2 model, not the recipe's Gemma 3
    recipe = dataclasses.replace(load_config_file(str(ROOT / "configs/recipes/gemma3_270m_arithmetic.py")),
                                 model_dir=str(base))
    with pytest.raises(UserError, match=r"model: architecture='gemma3' \(config.json: 'qwen2'\), .*disagree"):
        train(recipe, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
