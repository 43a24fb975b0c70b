"""Hugging Face interop: load a local model directory into the NNX Decoder, and export back.

A directory holds config.json, model.safetensors (or model.safetensors.index.json plus shards),
tokenizer.json and usually generation_config.json. Names are mapped and matrices transposed here,
in one table (`_TABLE`) used in both directions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh
from safetensors import safe_open
from safetensors.numpy import save_file

from r1zero import sharding
from r1zero.config import MeshConfig, ModelConfig, RopeScaling
from r1zero.errors import MissingFileError, UserError, read_json
from r1zero.models.decoder import Decoder
from r1zero.models.factory import model_from_arrays, to_host_arrays

ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama", "Qwen3ForCausalLM": "qwen3",
                 "Gemma3ForCausalLM": "gemma3"}
_HF_NAMES = {v: k for k, v in ARCHITECTURES.items()}
_MODEL_TYPES = {"qwen2": "qwen2", "llama": "llama", "qwen3": "qwen3", "gemma3": "gemma3_text"}  # config.json
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


def read_config(model_dir: str | os.PathLike, param_dtype: str | None = None,
                compute_dtype: str | None = None) -> ModelConfig:
    """ModelConfig from `model_dir/config.json`. Dtypes default to float32 on CPU (bfloat16 is
    slower there) and to the checkpoint's dtype on accelerators."""
    path = _require_file(Path(model_dir), "config.json")
    hf = read_json(path)
    if not isinstance(hf, dict):
        raise UserError(f"{path}: not a JSON object")
    try:
        return _model_config(hf, path, param_dtype, compute_dtype)
    except KeyError as e:
        raise UserError(f"{path}: no {e.args[0]!r}") from None
    except (UserError, TypeError, ValueError, ZeroDivisionError) as e:
        raise UserError(f"{path}: {e}") from None


def _model_config(hf: dict, path: Path, param_dtype: str | None, compute_dtype: str | None) -> ModelConfig:
    arch = _architecture(hf, path)
    if hf.get("use_sliding_window") and arch != "gemma3":
        raise UserError(f"{path}: use_sliding_window=true is not supported")
    if hf.get("mlp_bias"):
        raise UserError(f"{path}: mlp_bias=true is not supported")
    if hf.get("use_bidirectional_attention"):
        raise UserError(f"{path}: use_bidirectional_attention=true is not supported")
    act = hf.get("hidden_activation", hf.get("hidden_act", "gelu_pytorch_tanh" if arch == "gemma3" else "silu"))
    if act not in _ACTIVATIONS:
        raise UserError(f"{path}: hidden_act {act!r} is not supported (one of {sorted(_ACTIVATIONS)})")
    heads = hf["num_attention_heads"]
    default_dtype = "float32" if jax.default_backend() == "cpu" else hf.get("dtype", hf.get("torch_dtype", "float32"))
    bias = bool(hf.get("attention_bias", False))
    common = dict(
        architecture=arch,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        qkv_bias=arch == "qwen2" or bias,
        o_bias=arch != "qwen2" and bias,
        tie_embeddings=bool(hf.get("tie_word_embeddings", arch == "gemma3")),
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
        param_dtype=param_dtype or default_dtype,
        compute_dtype=compute_dtype or param_dtype or default_dtype,
        hidden_act=_ACTIVATIONS[act],
        qk_norm=arch in ("qwen3", "gemma3"),
    )
    if arch != "gemma3":
        theta, scaling = _rope(hf, path)
        return ModelConfig(**common, rope_theta=theta, rope_scaling=scaling)
    return ModelConfig(**common, **_gemma3_fields(hf, path))


_ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}


def _gemma3_fields(hf: dict, path: Path) -> dict:
    """Gemma 3's extras: (1 + w) norms before and after each sublayer, scaled embeddings, its own
    attention scale and soft caps, and sliding-window layers with their own rope base."""
    n = hf["num_hidden_layers"]
    types = hf.get("layer_types") or ["full_attention" if (i + 1) % hf.get("sliding_window_pattern", 6) == 0
                                      else "sliding_attention" for i in range(n)]
    rope = hf.get("rope_parameters") or {}
    full, local = dict(rope.get("full_attention") or {}), dict(rope.get("sliding_attention") or {})
    if hf.get("rope_scaling"):
        full.update(hf["rope_scaling"])
    for kind, params in (("full_attention", full), ("sliding_attention", local)):
        if params.get("rope_type", params.get("type", "default")) != "default":
            raise UserError(f"{path}: rope type {params.get('rope_type', params.get('type'))!r} for {kind} layers "
                            f"is not supported (default)")
    names = {"full_attention": "full", "sliding_attention": "sliding"}
    if set(types) - set(names):
        raise UserError(f"{path}: layer_types {sorted(set(types) - set(names))} are not supported")
    return dict(
        norm_plus_one=True, sandwich_norms=True, embed_scale=True,
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
        # transformers' Gemma 3 never applies attn_logit_softcapping (a Gemma 2 field it carries), so neither do we
        attn_softcap=None, final_softcap=hf.get("final_logit_softcapping"),
        sliding_window=hf.get("sliding_window", 4096), layer_types=tuple(names[t] for t in types),
        rope_theta=float(full.get("rope_theta", hf.get("rope_theta", 1_000_000.0))),
        rope_local_theta=float(local.get("rope_theta", hf.get("rope_local_base_freq", 10_000.0))),
    )


def _architecture(hf: dict, path: Path) -> str:
    archs = hf.get("architectures") or []
    for a in archs:
        if a in ARCHITECTURES:
            return ARCHITECTURES[a]
    by_type = {v: k for k, v in _MODEL_TYPES.items()}
    if not archs and hf.get("model_type") in by_type:
        return by_type[hf["model_type"]]
    raise UserError(
        f"{path}: unsupported model (architectures={archs}, model_type={hf.get('model_type')!r}); "
        f"supported: {sorted(ARCHITECTURES)}"
    )


def _rope(hf: dict, path: Path) -> tuple[float, RopeScaling | None]:
    """Rope base and scaling from either transformers 5's `rope_parameters` or the older keys."""
    params = dict(hf.get("rope_parameters") or {})
    if hf.get("rope_scaling"):
        params = {**hf["rope_scaling"], **params}
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise UserError(f"{path}: rope type {kind!r} is not supported (default or llama3)")
    return theta, RopeScaling(
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position_embeddings=int(params["original_max_position_embeddings"]),
    )


# ---------------------------------------------------------------------------------------------------
# Name and layout mapping.


class _Entry(NamedTuple):
    hf_name: str  # inside "model.layers.{i}." for per-layer entries
    path: tuple[str, ...]  # path in the NNX state
    hf_shape: tuple[int, ...]
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def _table(c: ModelConfig) -> tuple[list[_Entry], list[_Entry]]:
    """(top-level entries, per-layer entries) for config `c`."""
    D, F, V, H, K, Dh = c.hidden_size, c.intermediate_size, c.vocab_size, c.num_heads, c.num_kv_heads, c.head_dim
    same = lambda w: w
    T = lambda w: w.T

    def proj(n):  # [n*Dh, D] (torch Linear: out x in) <-> [D, n, Dh]
        return (lambda w: w.T.reshape(D, n, Dh)), (lambda x: x.reshape(D, n * Dh).T)

    def bias(n):
        return (lambda b: b.reshape(n, Dh)), (lambda x: x.reshape(n * Dh))

    top = [
        _Entry("model.embed_tokens.weight", ("embed",), (V, D), same, same),
        _Entry("model.norm.weight", ("final_norm",), (D,), same, same),
    ]
    if not c.tie_embeddings:
        top.append(_Entry("lm_head.weight", ("lm_head",), (V, D), T, T))
    if c.sandwich_norms:  # Gemma 3: HF's post_attention_layernorm is the norm on the attention output
        norms = [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "attn_post_norm"),
                 ("pre_feedforward_layernorm", "mlp_norm"), ("post_feedforward_layernorm", "mlp_post_norm")]
    else:  # Llama, Qwen: HF's post_attention_layernorm is the norm before the MLP
        norms = [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "mlp_norm")]
    layer = [_Entry(f"{hf_name}.weight", (ours,), (D,), same, same) for hf_name, ours in norms]
    layer += [
        _Entry("self_attn.q_proj.weight", ("attn", "q"), (H * Dh, D), *proj(H)),
        _Entry("self_attn.k_proj.weight", ("attn", "k"), (K * Dh, D), *proj(K)),
        _Entry("self_attn.v_proj.weight", ("attn", "v"), (K * Dh, D), *proj(K)),
        _Entry("self_attn.o_proj.weight", ("attn", "o"), (D, H * Dh),
               lambda w: w.T.reshape(H, Dh, D), lambda x: x.reshape(H * Dh, D).T),
        _Entry("mlp.gate_proj.weight", ("mlp", "gate"), (F, D), T, T),
        _Entry("mlp.up_proj.weight", ("mlp", "up"), (F, D), T, T),
        _Entry("mlp.down_proj.weight", ("mlp", "down"), (D, F), T, T),
    ]
    if c.qkv_bias:
        layer += [
            _Entry("self_attn.q_proj.bias", ("attn", "q_bias"), (H * Dh,), *bias(H)),
            _Entry("self_attn.k_proj.bias", ("attn", "k_bias"), (K * Dh,), *bias(K)),
            _Entry("self_attn.v_proj.bias", ("attn", "v_bias"), (K * Dh,), *bias(K)),
        ]
    if c.o_bias:
        layer.append(_Entry("self_attn.o_proj.bias", ("attn", "o_bias"), (D,), same, same))
    if c.qk_norm:
        layer += [_Entry("self_attn.q_norm.weight", ("attn", "q_norm"), (Dh,), same, same),
                  _Entry("self_attn.k_norm.weight", ("attn", "k_norm"), (Dh,), same, same)]
    return top, layer


def hf_to_arrays(tensors: Mapping[str, Any], c: ModelConfig, source: str = "checkpoint") -> dict:
    """Nested dict of our parameters from HF-named tensors (array-likes); names any tensor that is
    missing, mis-shaped or unexpected."""
    top, layer = _table(c)
    used: set[str] = set()

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in tensors:
            raise UserError(f"{source}: missing tensor {name!r}")
        w = tensors[name]
        if tuple(w.shape) != shape:
            raise UserError(f"{source}: tensor {name!r} has shape {tuple(w.shape)}, expected {shape}")
        used.add(name)
        return np.asarray(w[...])

    out: dict = {}
    for e in top:
        _set(out, e.path, e.to_ours(get(e.hf_name, e.hf_shape)))
    for e in layer:
        per_layer = [e.to_ours(get(f"model.layers.{i}.{e.hf_name}", e.hf_shape)) for i in range(c.num_layers)]
        _set(out, ("layers",) + e.path, np.stack(per_layer))
    ignorable = {"lm_head.weight"} if c.tie_embeddings else set()
    extra = sorted(n for n in tensors if n not in used and n not in ignorable and "rotary_emb.inv_freq" not in n)
    if extra:
        raise UserError(f"{source}: unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    return out


def arrays_to_hf(arrays: dict, c: ModelConfig) -> dict[str, np.ndarray]:
    """HF-named tensors from a nested dict of our parameters (the inverse of hf_to_arrays)."""
    top, layer = _table(c)
    out = {e.hf_name: np.ascontiguousarray(e.to_hf(_get(arrays, e.path))) for e in top}
    for e in layer:
        stacked = _get(arrays, ("layers",) + e.path)
        for i in range(c.num_layers):
            out[f"model.layers.{i}.{e.hf_name}"] = np.ascontiguousarray(e.to_hf(stacked[i]))
    return out


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


# ---------------------------------------------------------------------------------------------------
# Files.


def _require_file(model_dir: Path, name: str) -> Path:
    if not model_dir.is_dir():
        raise MissingFileError(f"model directory {model_dir} does not exist")
    path = model_dir / name
    if not path.is_file():
        found = sorted(p.name for p in model_dir.iterdir())
        raise MissingFileError(f"{path} is missing (the directory holds {found})")
    return path


class _LazyTensors(Mapping):
    """name -> tensor of a (possibly sharded) safetensors checkpoint; `.shape` is read from the
    header and the data only on `[...]`, so one tensor at a time is copied from the mapped file."""

    def __init__(self, handles: dict[str, tuple[Any, Path]]):
        self._handles = handles  # name -> (open file, its path)

    def __getitem__(self, name):
        return _Tensor(*self._handles[name], name)

    def __iter__(self):
        return iter(self._handles)

    def __len__(self):
        return len(self._handles)


class _Tensor:
    def __init__(self, handle, path: Path, name: str):
        self._handle, self._path, self._name = handle, path, name
        self.shape = tuple(handle.get_slice(name).get_shape())

    def __getitem__(self, _):
        try:
            return self._handle.get_tensor(self._name)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for damaged data
            raise UserError(f"{self._path}: tensor {self._name!r} cannot be read ({e}); is the file complete?") from None


def open_safetensors(model_dir: str | os.PathLike) -> _LazyTensors:
    """All tensors of model.safetensors or of the shards named by model.safetensors.index.json."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise MissingFileError(f"model directory {model_dir} does not exist")
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index)["weight_map"]
        files = sorted(set(weight_map.values()))
    elif (model_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        found = sorted(p.name for p in model_dir.iterdir())
        raise MissingFileError(
            f"{model_dir} has neither model.safetensors nor model.safetensors.index.json (found {found})"
        )
    handles = {}
    for f in files:
        path = model_dir / f
        if not path.is_file():
            raise MissingFileError(f"{path} is missing (named by {index.name})")
        try:
            handle = safe_open(str(path), framework="np")
        except Exception as e:  # noqa: BLE001 - as above
            raise UserError(f"{path}: not a readable safetensors file ({e})") from None
        handles.update({name: (handle, path) for name in handle.keys()})
    return _LazyTensors(handles)


def load_model(model_dir: str | os.PathLike, mesh: Mesh | None = None, param_dtype: str | None = None,
               compute_dtype: str | None = None, given: ModelConfig | None = None) -> tuple[Decoder, ModelConfig]:
    """Loads a local HF Qwen2/Qwen3/Llama/Gemma 3 (text) directory into a Decoder sharded on `mesh`
    (default: FSDP over all local devices); `given`: a run's model section (see `agree`)."""
    config = run_model_config(model_dir, given) if given is not None else read_config(model_dir, param_dtype,
                                                                                      compute_dtype)
    tensors = open_safetensors(model_dir)
    arrays = hf_to_arrays(tensors, config, source=str(model_dir))
    mesh = mesh or sharding.make_mesh(MeshConfig())
    return model_from_arrays(config, arrays, mesh), config


RUN_FIELDS = ("param_dtype", "compute_dtype", "remat", "scan_layers")  # of ModelConfig: chosen by the run, not by the checkpoint


def agree(loaded: ModelConfig, given: ModelConfig, where: str | os.PathLike) -> ModelConfig:
    """`loaded` (a config.json) with what a run's `model` section sets: fields left at their defaults
    come from config.json; RUN_FIELDS set otherwise are the run's choice; any other field set must
    agree with config.json (a recipe names the architecture of its model_dir), else a UserError
    naming each difference."""
    default = ModelConfig()
    set_ = [f.name for f in dataclasses.fields(ModelConfig) if getattr(given, f.name) != getattr(default, f.name)]
    differ = [f"{k}={getattr(given, k)!r} (config.json: {getattr(loaded, k)!r})" for k in set_
              if k not in RUN_FIELDS and getattr(given, k) != getattr(loaded, k)]
    if differ:
        raise UserError(f"model: {', '.join(differ)} disagree with {where}/config.json; with model_dir set, "
                        f"the model section describes that model (or is left out)")
    run = {k: getattr(given, k) for k in RUN_FIELDS if k in set_}
    if "param_dtype" in run and "compute_dtype" not in run:
        run["compute_dtype"] = run["param_dtype"]
    return dataclasses.replace(loaded, **run)


def run_model_config(model_dir: str | os.PathLike, given: ModelConfig) -> ModelConfig:
    """The ModelConfig a run uses: `model_dir`'s config.json agreed with the run's model section."""
    return agree(read_config(model_dir), given, model_dir)


def hf_config_dict(c: ModelConfig, eos_token_id=None, bos_token_id=None) -> dict:
    """config.json content for `c` (legacy rope keys, which transformers 4 and 5 and vLLM read)."""
    _check_family(c)
    d: dict[str, Any] = {
        "architectures": [_HF_NAMES[c.architecture]],
        "model_type": _MODEL_TYPES[c.architecture],
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tie_embeddings,
        "max_position_embeddings": c.max_position_embeddings,
        "torch_dtype": c.param_dtype,
        "use_cache": True,
    }
    if c.rope_scaling is not None:
        d["rope_scaling"] = {"rope_type": "llama3", **vars(c.rope_scaling)}
    if c.architecture in ("llama", "qwen3"):
        d.update(attention_bias=c.o_bias, mlp_bias=False)
    elif c.architecture == "gemma3":
        types = {"full": "full_attention", "sliding": "sliding_attention"}
        del d["hidden_act"]
        qpas = c.query_pre_attn_scalar
        d.update(hidden_activation="gelu_pytorch_tanh", attention_bias=c.o_bias,
                 query_pre_attn_scalar=int(qpas) if float(qpas).is_integer() else qpas,  # transformers wants an int attn_logit_softcapping=c.attn_softcap,
                 final_logit_softcapping=c.final_softcap, sliding_window=c.sliding_window,
                 layer_types=[types[t] for t in c.layer_types] or ["full_attention"] * c.num_layers,
                 rope_local_base_freq=c.rope_local_theta)
    if eos_token_id is not None:
        d["eos_token_id"] = eos_token_id
    if bos_token_id is not None:
        d["bos_token_id"] = bos_token_id
    return d


def _check_family(c: ModelConfig) -> None:
    """A config a Hugging Face class of its family can hold (or a UserError naming the mismatch)."""
    if c.architecture == "gemma3":
        want = dict(qk_norm=True, norm_plus_one=True, sandwich_norms=True, embed_scale=True, hidden_act="gelu_tanh",
                    rope_scaling=None)
    else:
        want = dict(qk_norm=c.architecture == "qwen3", norm_plus_one=False, sandwich_norms=False, embed_scale=False,
                    hidden_act="silu", query_pre_attn_scalar=None, attn_softcap=None, final_softcap=None,
                    layer_types=())
    wrong = [f"{k}={getattr(c, k)!r}" for k, v in want.items() if getattr(c, k) != v]
    if wrong:
        raise UserError(f"a {c.architecture} checkpoint cannot hold {', '.join(wrong)}")
    if c.architecture == "qwen2" and (not c.qkv_bias or c.o_bias):
        raise UserError("Qwen2 checkpoints have q/k/v bias and no o bias")
    if c.architecture != "qwen2" and c.qkv_bias != c.o_bias:
        raise UserError(f"{c.architecture} checkpoints bias q/k/v and o together (attention_bias)")


def fresh_model_dir(out_dir: str | os.PathLike, keep_tokenizer: bool = False) -> Path:
    """`out_dir` made ready for a model: created, and the files of a model written there before
    removed (shards and their index, which loading would prefer to a new model.safetensors, and
    tokenizer files the new model may not have). A file in its place is an error naming it."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a directory to write a model into")
    out.mkdir(parents=True, exist_ok=True)
    stale = [*out.glob("model-*-of-*.safetensors"), out / "model.safetensors.index.json"]
    if not keep_tokenizer:
        stale += [out / "tokenizer.model", *(out / name for name in TOKENIZER_FILES)]
    for path in stale:
        if path.is_file():
            path.unlink()
    return out


def save_model(model: Decoder, out_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None,
               dtype: str | None = None) -> Path:
    """Writes `out_dir` as a HF directory (config.json, model.safetensors, tokenizer files copied from
    `tokenizer_dir`) that transformers and vLLM load. The weights are written to a temporary file and
    renamed, so an interrupted export never leaves a half-written model.safetensors."""
    c: ModelConfig = model.config
    out = Path(out_dir)
    tensors = arrays_to_hf(to_host_arrays(model), c)  # on several hosts every process gathers ...
    if jax.process_index() != 0:  # ... and the first one writes
        return out
    out = fresh_model_dir(out, keep_tokenizer=tokenizer_dir is not None and Path(tokenizer_dir).resolve() == out.resolve())
    if dtype is not None:
        tensors = {k: v.astype(np.dtype(jax.numpy.dtype(dtype))) for k, v in tensors.items()}
    tmp = out / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / "model.safetensors")
    eos = bos = None
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file() and Path(tokenizer_dir).resolve() != out.resolve():
                shutil.copyfile(Path(tokenizer_dir) / name, out / name)
        src_cfg = Path(tokenizer_dir) / "config.json"
        if src_cfg.is_file():
            src = read_json(src_cfg)
            eos, bos = src.get("eos_token_id"), src.get("bos_token_id")
    config = hf_config_dict(c, eos, bos)
    if dtype is not None:
        config["torch_dtype"] = dtype
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
