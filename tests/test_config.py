"""Command-line overrides of frozen config dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from r1zero.config import MeshConfig, ModelConfig, apply_overrides


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
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
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
