"""Command-line overrides of frozen config dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from r1zero.config import MeshConfig, ModelConfig, TrainConfig, apply_overrides, from_dict, to_dict
from r1zero.errors import UserError


@dataclasses.dataclass(frozen=True)
class Top:
    model: ModelConfig = ModelConfig()
    mesh: MeshConfig = MeshConfig()
    name: str = "run"
    tags: tuple[str, ...] = ()


def test_overrides_parse_types():
    cfg = apply_overrides(Top(), ["model.num_layers=6", "model.rope_theta=5e5", "model.remat=true",
                                  "name=exp1", "tags=a,b", "model.rope_scaling=none"])
    assert cfg.model.num_layers == 6 and cfg.model.rope_theta == 500000.0 and cfg.model.remat is True
    assert cfg.name == "exp1" and cfg.tags == ("a", "b") and cfg.model.rope_scaling is None
    assert Top().model.num_layers == 2  # frozen: the original is untouched


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.num_layerz=3", "unknown config key 'model.num_layerz'"),
        ("model.num_layers=three", "'model.num_layers' expects int"),
        ("model.remat=maybe", "'model.remat' expects true/false"),
        ("name.x=1", "'name.x'.*has no sub-keys"),
        ("model.num_layers", "must look like key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(Top(), [override])


def test_model_config_validates():
    with pytest.raises(ValueError, match="multiple of model.num_kv_heads"):
        ModelConfig(num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="architecture"):
        ModelConfig(architecture="gpt2")


@pytest.mark.parametrize(
    "name, published",  # parameter counts from the model cards / safetensors metadata
    [("qwen2_5_0_5b", 494_032_768), ("qwen2_5_1_5b", 1_543_714_304), ("llama3_2_1b", 1_235_814_400)],
)
def test_shipped_model_configs_have_published_sizes(name, published):
    from r1zero.config import load_config_file
    from r1zero.models import abstract_model, param_count

    config = load_config_file(str(Path(__file__).parents[1] / "configs" / f"{name}.py"))
    assert param_count(abstract_model(config)[1]) == published


def test_load_config_file_errors(tmp_path):
    from r1zero.config import load_config_file

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config_file(str(tmp_path / "none.py"))
    (tmp_path / "bad.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="defines no get_config"):
        load_config_file(str(tmp_path / "bad.py"))


@pytest.mark.parametrize("override, message", [
    ("optim.learning_rate=nan", "optim.learning_rate must be finite and >= 0, got nan"),
    ("optim.learning_rate=-1e-4", "optim.learning_rate must be finite and >= 0"),
    ("optim.learning_rate=inf", "optim.learning_rate must be finite"),
    ("steps=-5", "steps must be >= 1, got -5"),
    ("eval_every=-1", "eval_every must be >= 0"),
    ("checkpoint.keep=0", "checkpoint.keep must be >= 1"),
    ("optim.max_grad_norm=0", "optim.max_grad_norm must be finite and > 0"),
    ("sampling.num_samples=1", "sampling.num_samples must be >= 2 for training"),
    ("sampling.temperature=0", "sampling.temperature must be > 0 for training"),
    ("num_minibatches=0", "num_minibatches must be >= 1"),
    ("optim.micro_batches=0", "optim.micro_batches must be >= 1"),
    ("optim.micro_batches=3", "optim.micro_batches must be a divisor of the 128 rows"),
    ("mu=0", "mu must be >= 1"),
    ("model.num_kv_heads=0", "model.num_kv_heads must be >= 1"),
    ("model.head_dim=7", "model.head_dim must be even"),
    ("num_minibatches=3", "prompts_per_rollout must be a multiple of num_minibatches"),
    ("task.reward_weights=1,2", "task.reward_weights must be one weight per reward"),
    ("sampling.param_layout=fsdp", "sampling.param_layout must be auto or train"),
    ("grpo.epsilon_low=1.5", "grpo.epsilon_low must be < 1"),
    ("grpo.overlong_cache=16", "grpo.overlong_cache must be < sampling.max_new_tokens"),
    ("mesh.fsdp=0", "mesh.fsdp must be >= 1 or -1"),
    ("seed=-1", "seed must be in"),
    ("seed=99999999999999999999999", "seed must be in"),
    ("task.reward_weights=0", "task.reward_weights must be finite numbers, not all 0"),
])
def test_train_config_values_are_checked_and_named(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(TrainConfig(), [override])


def test_overrides_are_checked_together_not_one_by_one():
    start = apply_overrides(TrainConfig(), ["num_minibatches=4"])
    config = apply_overrides(start, ["prompts_per_rollout=6", "num_minibatches=3"])  # 6 % 4 != 0 on the way
    assert (config.prompts_per_rollout, config.num_minibatches) == (6, 3)


def test_a_config_file_with_values_of_the_wrong_type_is_named():
    data = to_dict(TrainConfig())
    data["steps"] = "300"
    with pytest.raises(UserError, match=r"run/config.json.steps must be of type int, got '300'"):
        from_dict(TrainConfig, data, where="run/config.json")
    data["steps"], data["optim"]["learning_rate"] = 300, "1e-4"
    with pytest.raises(UserError, match="optim.learning_rate must be of type float"):
        from_dict(TrainConfig, data, where="run/config.json")
    data["optim"]["learning_rate"] = 1  # an int where a float goes is fine
    assert from_dict(TrainConfig, data).optim.learning_rate == 1
    data["optim"]["learning_rate"] = -1.0  # out of range in a file: the file is named too
    with pytest.raises(UserError, match=r"^run/config.json: optim.learning_rate must be finite and >= 0, got -1.0$"):
        from_dict(TrainConfig, data, where="run/config.json")
