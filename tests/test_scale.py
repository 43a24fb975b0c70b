"""Every mesh shape gives the same training step and the same greedy rollouts; FSDP really splits
parameters and optimizer state. Runs this file as a script with 8 fake CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
MESHES = [(1, 1, 1), (8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8), (1, 8, 1)]


def run_script(*args: str) -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results() -> dict:
    return run_script("meshes")


@pytest.mark.slow
def test_train_step_is_the_same_on_every_mesh(results):
    ref = results["(1, 1, 1)"]
    for mesh in MESHES[1:]:
        got = results[str(mesh)]
        assert abs(got["loss"] - ref["loss"]) < 1e-5 * max(1.0, abs(ref["loss"])), mesh
        assert abs(got["grad_norm"] - ref["grad_norm"]) < 1e-5 * ref["grad_norm"], mesh
        assert got["max_param_diff"] < 1e-6, mesh  # after the update (eps=1: no Adam amplification)


@pytest.mark.slow
def test_shared_prompt_step_is_the_full_rows_step_on_every_mesh(results):
    """Micro-batches that carry each group's prompt once (`share_prompts`, the prompt table
    replicated, split over the row devices where it divides) take the step of the full rows."""
    ref = results["(1, 1, 1)"]["shared"]
    for mesh in MESHES:
        got = results[str(mesh)]["shared"]
        assert abs(got["loss"] - got["plain_loss"]) < 1e-5 * max(1.0, abs(got["plain_loss"])), mesh
        assert abs(got["grad_norm"] - got["plain_grad_norm"]) < 1e-5 * got["plain_grad_norm"], mesh
        assert got["max_param_diff_plain"] < 1e-6, mesh
        assert abs(got["loss"] - ref["loss"]) < 1e-5 * max(1.0, abs(ref["loss"])), mesh


@pytest.mark.slow
def test_greedy_rollouts_agree_on_every_mesh(results):
    ref = results["(1, 1, 1)"]["greedy"]
    for mesh in MESHES[1:]:
        got = results[str(mesh)]
        for r, (a, b) in enumerate(zip(got["greedy"], ref)):
            for j, (x, y) in enumerate(zip(a, b)):
                if x != y:  # only a near-tie of the two best logits may separate them
                    assert got["top2_gap"][r][j] < 1e-5, (mesh, r, j)
                    break


@pytest.mark.slow
def test_sampler_parameter_layouts_agree(results):
    for mesh in MESHES:
        for layout, (same_tokens, logp_diff) in results[str(mesh)]["layouts"].items():
            assert same_tokens and logp_diff < 1e-4, (mesh, layout)  # float32 rounding of large logits


@pytest.mark.slow
def test_fsdp_splits_parameters_and_optimizer_state(results):
    fsdp = results["(1, 8, 1)"]
    assert fsdp["device0_fraction"] < 1 / 8 + 0.02, fsdp
    assert fsdp["replicated_large"] == []  # nothing big silently replicated


@pytest.mark.slow
def test_the_memory_estimate_is_what_devices_hold(results):
    for mesh in MESHES:  # r1zero info's per-device numbers, from the config alone
        got = results[str(mesh)]
        assert got["param_bytes_estimate"] == got["param_bytes"], mesh
        assert 0 <= got["opt_bytes"] - 2 * got["param_bytes_estimate"] <= 64, mesh  # AdamW's moments, + step counts


def _meshes() -> dict:
    import dataclasses

    import jax
    import numpy as np
    from flax import nnx

    from r1zero.config import MeshConfig, ModelConfig, OptimConfig, SamplingConfig
    from r1zero.models import create_model
    from r1zero.models.factory import param_bytes_per_device
    from r1zero.sampler import sample
    from r1zero.sharding import make_mesh, rows_to_global
    from r1zero.train import init_training
    from tests.test_train import make_batch, tiny_config

    model_cfg = ModelConfig(vocab_size=40, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=8,
                            num_kv_heads=2, head_dim=8, qkv_bias=True, tie_embeddings=True)
    config = tiny_config(model=model_cfg, optim=OptimConfig(learning_rate=1e-2, eps=1.0, max_grad_norm=1e9))
    batch = make_batch(0, B=8)
    prompts = np.random.default_rng(0).integers(0, 40, (4, 6)).tolist()
    out, ref_params = {}, None
    for shape in MESHES:
        devices = jax.devices()[:1] if shape == (1, 1, 1) else None
        mesh = make_mesh(MeshConfig(*shape), devices)
        model = create_model(model_cfg, mesh, seed=0)
        # Larger weights than the 0.02 init: peaked logits, so greedy decoding does not repeat one token.
        nnx.update(model, jax.tree.map(lambda x: 10 * x, nnx.state(model, nnx.Param)))
        s = sample(model, prompts, jax.random.key(0), SamplingConfig(temperature=0.0, max_new_tokens=8, eos_ids=()), None)
        tokens, mask = s.sequences()
        logits, _ = model(jax.numpy.asarray(tokens), jax.numpy.maximum(np.cumsum(mask, 1) - 1, 0), jax.numpy.asarray(mask))
        top2 = np.sort(np.asarray(logits), -1)[..., -2:]
        Lp = s.prompt_tokens.shape[1]
        gap = (top2[..., 1] - top2[..., 0])[:, Lp - 1:-1]
        layouts = {}
        for layout in ("tensor", "replicated"):  # decoding with resharded weights changes nothing
            other = sample(model, prompts, jax.random.key(0),
                           SamplingConfig(temperature=0.0, max_new_tokens=8, eos_ids=(), param_layout=layout), None)
            layouts[layout] = [other.completion_tokens.tolist() == s.completion_tokens.tolist(),
                               float(np.abs(other.logprobs - s.logprobs).max())]
        if shape in ((8, 1, 1), (2, 2, 2)):  # rows split over devices, then fewer rows than devices
            # Decoding in phases with the finished rows dropped (EOS ids that end most rows early)
            # gives the tokens of one phase over the whole cache.
            phased_cfg = SamplingConfig(max_new_tokens=64, eos_ids=(5, 17))
            phased = sample(model, prompts, jax.random.key(1), phased_cfg, None)
            assert phased.completion_mask.sum(1).min() < 16 and phased.decode_steps > 32, phased.completion_mask.sum(1)
            one = sample(model, prompts, jax.random.key(1), dataclasses.replace(phased_cfg, decode_phases=False), None)
            layouts["phases"] = [one.completion_tokens.tolist() == phased.completion_tokens.tolist()
                                 and one.finish_reason == phased.finish_reason,
                                 float(np.abs(one.logprobs - phased.logprobs).max())]
        graphdef, params, rest, opt_state, step = init_training(model, config, mesh)
        held = lambda tree: max(sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards
                                    if s.device == d) for d in mesh.devices.flat)  # on the fullest device
        estimate = param_bytes_per_device(model_cfg, dict(zip(("data", "fsdp", "tensor"), shape)))
        device0 = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves((params, opt_state)))
        total = sum(x.nbytes for x in jax.tree.leaves((params, opt_state)))
        replicated_large = [str(k) for k, v in nnx.to_flat_state(params)
                            if v.get_value().sharding.is_fully_replicated and v.get_value().size > 0.01 * total / 4]
        params, opt_state, stats = step(params, opt_state, rows_to_global(batch, mesh))
        host = [np.asarray(x) for x in jax.tree.leaves(params)]
        ref_params = ref_params or host
        shared = _shared_prompt_step(model_cfg, mesh)
        out[str(shape)] = {
            "shared": shared, "loss": float(stats["loss"]), "grad_norm": float(stats["grad_norm"]),
            "max_param_diff": max(float(np.abs(a - b).max()) for a, b in zip(host, ref_params)),
            "greedy": s.completion_tokens.tolist(), "top2_gap": gap.tolist(),
            "device0_fraction": device0 / total, "replicated_large": replicated_large, "layouts": layouts,
            "param_bytes": held(params), "opt_bytes": held(opt_state), "param_bytes_estimate": estimate,
        }
    return out


def _shared_prompt_step(model_cfg, mesh) -> dict:
    """One step on sorted, cut micro-batches of a long-tailed rollout, with and without the prompt
    table (`share_prompts`), on `mesh`."""
    import jax

    from r1zero.config import OptimConfig
    from r1zero.models import create_model
    from r1zero.rollout import minibatches
    from r1zero.sharding import micro_batch_to_global
    from r1zero.train import init_training
    from tests.test_rollout import config_with, group_prompts, rollout_arrays

    arrays = rollout_arrays(4, ref=False)
    arrays["mask"][::8, :2] = False  # a left-padded prompt every other group (rows 0, 8, ... start groups)
    arrays = group_prompts(arrays)
    arrays["tokens"] = np.where(arrays["mask"], arrays["tokens"] % model_cfg.vocab_size, 0)
    out, params_of = {}, {}
    for share in (False, True):
        config = config_with(2, model=model_cfg, optim=OptimConfig(learning_rate=1e-2, eps=1.0, max_grad_norm=1e9,
                                                                    micro_batches=2, share_prompts=share))
        micro = minibatches(arrays, config, rollout=0)[0]
        assert all(("prefix_tokens" in m) == share for m in micro)
        model = create_model(model_cfg, mesh, seed=1)
        _, params, _, opt_state, step = init_training(model, config, mesh)
        params, _, stats = step(params, opt_state, [micro_batch_to_global(m, mesh) for m in micro])
        params_of[share] = [np.asarray(x) for x in jax.tree.leaves(params)]
        key = "" if share else "plain_"
        out[key + "loss"], out[key + "grad_norm"] = float(stats["loss"]), float(stats["grad_norm"])
    out["max_param_diff_plain"] = max(float(np.abs(a - b).max()) for a, b in zip(params_of[False], params_of[True]))
    return out


@pytest.mark.slow
def test_evaluation_is_the_same_on_one_device_and_on_eight():
    results = run_script("eval_devices")
    assert results["one"] == results["eight_data"] == results["eight_fsdp"]


def _eval_devices() -> dict:
    """r1zero.evaluate's rows (n samples, greedy) of the shipped base on 1 device and on 8."""
    import jax

    from r1zero.config import MeshConfig
    from r1zero.models import hf
    from r1zero.sharding import make_mesh
    from r1zero.tokenizer import Tokenizer
    from tests.test_evaluate import BASE, eval_config, prompts

    config = eval_config(samples=4, ks=(1, 4))
    out = {}
    for name, mesh in (("one", make_mesh(MeshConfig(), jax.devices()[:1])), ("eight_data", make_mesh(MeshConfig(8, 1, 1))),
                       ("eight_fsdp", make_mesh(MeshConfig(1, 8, 1)))):
        model, _ = hf.load_model(BASE, mesh)
        from r1zero.evaluate import eval_rows

        out[name] = eval_rows(model, Tokenizer(BASE), prompts(8), config, jax.random.key(0), mesh)
    return out


def _two_process_step(process_id: str, port: str) -> dict:
    from r1zero import distributed

    assert distributed.initialize(f"localhost:{port}", 2, int(process_id))
    import jax

    from r1zero.config import MeshConfig, OptimConfig
    from r1zero.models import create_model
    from r1zero.sharding import make_mesh, rows_to_global
    from r1zero.train import init_training
    from tests.test_train import TINY, make_batch, tiny_config

    config = tiny_config(optim=OptimConfig(learning_rate=1e-2, eps=1.0, max_grad_norm=1e9))
    mesh = make_mesh(MeshConfig(data=2, fsdp=1, tensor=1))  # one device in each process
    model = create_model(TINY, mesh, seed=0)
    graphdef, params, rest, opt_state, step = init_training(model, config, mesh)
    full = make_batch(0, B=8)
    mine = [{k: v[4 * int(process_id):4 * int(process_id) + 4] for k, v in mb.items()} for mb in full]  # this host's rows
    params, opt_state, stats = step(params, opt_state, rows_to_global(mine, mesh))
    # Micro-batch widths: each host's rows (different lengths on each) are cut to the widths of the
    # global micro-batch, the longest over both hosts.
    from r1zero.rollout import minibatches
    from tests.test_rollout import config_with, rollout_arrays

    from r1zero.rollout import completion_width

    steps = minibatches(rollout_arrays(int(process_id), ref=False), config_with(4), rollout=0)
    lengths = np.arange(64) < (20 if process_id == "0" else 40)  # one row: 20 tokens here, 40 there
    widths_N = completion_width(lengths[None]), completion_width(np.zeros((1, 64), bool))
    return {"process": jax.process_index(), "processes": jax.process_count(),
            "loss": float(stats["loss"]), "grad_norm": float(stats["grad_norm"]),
            "widths": [[mb["loss_mask"].shape[1] for mb in micro] for micro in steps],
            "completion_widths": widths_N,
            "own_widths": [[int(max(8, 2 ** np.ceil(np.log2(max(mb["loss_mask"].sum(1).max(), 1)))))
                            for mb in micro] for micro in steps]}


@pytest.mark.slow
def test_two_processes_with_jax_distributed_match_one_process():
    import socket

    import jax

    from r1zero.config import MeshConfig, OptimConfig
    from r1zero.models import create_model
    from r1zero.sharding import make_mesh
    from r1zero.train import init_training
    from tests.test_train import TINY, make_batch, tiny_config

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "two_process", str(i), port], env=env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [r["process"] for r in results] == [0, 1] and all(r["processes"] == 2 for r in results)

    config = tiny_config(optim=OptimConfig(learning_rate=1e-2, eps=1.0, max_grad_norm=1e9))
    mesh = make_mesh(MeshConfig(), jax.devices()[:1])
    _, params, _, opt_state, step = init_training(create_model(TINY, mesh, seed=0), config, mesh)
    _, _, stats = step(params, opt_state, make_batch(0, B=8))
    for r in results:
        assert abs(r["loss"] - float(stats["loss"])) < 1e-5 and abs(r["grad_norm"] - float(stats["grad_norm"])) < 1e-5
    own = np.array([r["own_widths"] for r in results])
    assert (own[0] != own[1]).any()  # the hosts' own rows would need different widths...
    assert results[0]["widths"] == results[1]["widths"] == own.max(0).tolist()  # ...they cut to the larger
    assert [r["completion_widths"] for r in results] == [[64, 8], [64, 8]]  # the longest of both: 40 -> 64



def _two_process_train(process_id: str, port: str, workdir: str, steps: str = "4", every: str = "2",
                       minibatches: str = "1", share_prompts: str = "0", beta: str = "0") -> dict:
    from r1zero import distributed

    assert distributed.initialize(f"localhost:{port}", 2, int(process_id))
    import dataclasses

    from r1zero.config import CheckpointConfig, GRPOConfig, MeshConfig, OptimConfig, SamplingConfig
    from r1zero.train import train
    from tests.test_train import tiny_config

    # Completions of different lengths in two micro-batches: each host cuts its rows to the widths
    # both agree on (the longest over the hosts).
    config = tiny_config(steps=int(steps), mesh=MeshConfig(data=2, fsdp=1, tensor=1), prompts_per_rollout=8,
                         sampling=SamplingConfig(num_samples=4, max_new_tokens=24, max_prompt_len=16,
                                                 eos_ids=(3, 7, 11, 15, 19)),  # about 1 token in 8 ends a row
                         optim=OptimConfig(learning_rate=3e-3, micro_batches=2, share_prompts=share_prompts == "1"),
                         num_minibatches=int(minibatches), grpo=GRPOConfig(beta=float(beta)),
                         checkpoint=CheckpointConfig(every=int(every)), eval_every=2)
    config = dataclasses.replace(config, task=dataclasses.replace(config.task, rewards=("random",)))
    return train(config, workdir, progress=False)


def two_process_train(workdir: Path, *args: str) -> list[dict]:
    """`_two_process_train(workdir, *args)` in two processes on localhost; both summaries."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "two_process_train", str(i), port,
                               str(workdir), *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


@pytest.mark.slow
def test_two_process_training_run(tmp_path):
    """Two hosts on localhost: each samples its own prompts, one global update per step; host 0 writes
    the run directory, both see the same summary."""
    summaries = two_process_train(tmp_path)
    assert summaries[0] == summaries[1] and summaries[0]["steps"] == 4
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # written once, by host 0
    assert (tmp_path / "final" / "model.safetensors").is_file()
    assert [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()] != []


@pytest.mark.slow
def test_two_process_run_resumed_mid_rollout_continues_it_exactly(tmp_path):
    """A checkpoint in the middle of a rollout keeps every host's rows (not the first host's twice):
    stopped after step 3 of 4 (rollouts of two steps) and resumed, the last step is the one of the
    run that was never stopped."""
    metrics = lambda d: {r["step"]: r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
                         if "loss" in r}
    two_process_train(tmp_path / "whole", "4", "3", "2")
    two_process_train(tmp_path / "resumed", "3", "3", "2")
    (summary, _) = two_process_train(tmp_path / "resumed", "4", "3", "2")
    assert summary["resumed_from"] == 3
    whole, resumed = metrics(tmp_path / "whole"), metrics(tmp_path / "resumed")
    for key in ("loss", "grad_norm", "entropy", "logp_diff_mean"):
        assert resumed[4][key] == pytest.approx(whole[4][key], rel=1e-6), key
    assert resumed[3]["loss"] == pytest.approx(whole[3]["loss"], rel=1e-6)


@pytest.mark.slow
def test_two_process_run_with_shared_prompts_takes_the_same_steps(tmp_path):
    """Each host's micro-batches carry its groups' prompts once; the hosts join their prompt tables
    into one (each row pointing into its own host's part): the same rollout gives the same steps
    as rows written out in full, the reference log-prob pass (a KL term) included."""
    metrics = lambda d: {r["step"]: r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
                         if "loss" in r}
    two_process_train(tmp_path / "plain", "2", "0", "2", "0", "0.1")
    two_process_train(tmp_path / "shared", "2", "0", "2", "1", "0.1")
    plain, shared = metrics(tmp_path / "plain"), metrics(tmp_path / "shared")
    for step in (1, 2):  # one rollout, two minibatches
        for key in ("loss", "grad_norm", "entropy", "logp_diff_mean", "kl"):
            assert shared[step][key] == pytest.approx(plain[step][key], rel=1e-5, abs=1e-7), (step, key)
    assert plain[1]["loss"] != plain[2]["loss"] and plain[2]["kl"] > 1e-6  # step 2: the policy moved off the reference


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    run = {"meshes": _meshes, "two_process": _two_process_step, "two_process_train": _two_process_train,
           "eval_devices": _eval_devices}
    print(json.dumps(run[sys.argv[1]](*sys.argv[2:])))
