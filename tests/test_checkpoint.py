"""Checkpoints: exact resume after SIGKILL at chosen moments, SIGTERM, broken and NaN steps,
retention, other meshes, export, and the resume rules of `r1zero train`."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from r1zero.checkpoint import Checkpointer
from r1zero.cli import main
from r1zero.config import CheckpointConfig, SamplingConfig, TrainConfig, to_dict
from r1zero.errors import UserError
from r1zero.train import Callback, train
from tests.test_train import tiny_config

ROOT = Path(__file__).parents[1]


def resume_config() -> TrainConfig:
    # Rollouts of two steps (two minibatches); saves every 3 steps: after step 3 (mid-rollout),
    # step 6 (a rollout boundary) and step 8 (the end). The coin-flip reward makes every step update.
    config = tiny_config(steps=8, num_minibatches=2, prompts_per_rollout=8,
                         sampling=SamplingConfig(num_samples=4, max_new_tokens=2, max_prompt_len=16),
                         checkpoint=CheckpointConfig(every=3, keep=3), eval_every=4)
    return dataclasses.replace(config, task=dataclasses.replace(config.task, rewards=("random",)))


class KillAt(Callback):
    """The crash tests' kill points, "phase:step": SIGKILL right after the rollout for step s is
    sampled ("rollout"), after update s ("update"), or right after the save of step s started, before
    it commits ("save"); SIGTERM after step s ("sigterm") or right after the rollout for step s is
    sampled ("sigterm-rollout"). For "rollout" and "update" the previous asynchronous save is let
    finish first, so which checkpoint survives does not depend on timing."""

    def __init__(self, where: str):
        phase, step = where.split(":")
        self.phase, self.step = phase, int(step)

    def on_rollout(self, trainer, state, batch):
        if self.phase == "rollout" and state.step + 1 == self.step:
            trainer.checkpointer.wait()
            os.kill(os.getpid(), signal.SIGKILL)
        if self.phase == "sigterm-rollout" and state.step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)

    def after_step(self, trainer, state, batch, row):
        if state.step != self.step or self.phase.endswith("rollout"):
            return
        if self.phase == "update":
            trainer.checkpointer.wait()
        os.kill(os.getpid(), signal.SIGTERM if self.phase == "sigterm" else signal.SIGKILL)


def run_in_subprocess(config: TrainConfig, workdir: Path, kill: str) -> subprocess.CompletedProcess:
    """`train` in a fresh process with a KillAt(kill) callback installed."""
    code = ("import json, sys; from r1zero.config import TrainConfig, from_dict; from r1zero.train import train; "
            "from tests.test_checkpoint import KillAt; "
            "train(from_dict(TrainConfig, json.loads(sys.argv[1])), sys.argv[2], progress=False, "
            "callbacks=[KillAt(sys.argv[3])])")
    return subprocess.run([sys.executable, "-c", code, json.dumps(to_dict(config)), str(workdir), kill],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def metric_rows(workdir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("reference")
    train(resume_config(), workdir, progress=False)
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("kill, restored_from", [
    ("update:5", 3),  # mid-update; the newest checkpoint is in the middle of a rollout
    ("rollout:7", 6),  # mid-rollout (after sampling, before any update); newest at a rollout boundary
    ("save:6", (3, 6)),  # between an asynchronous save's start and its commit
])
def test_exact_resume_after_sigkill(reference, tmp_path, kill, restored_from):
    proc = run_in_subprocess(resume_config(), tmp_path, kill)
    assert proc.returncode == -9, proc.stderr[-2000:]  # really killed
    summary = train(resume_config(), tmp_path, progress=False)
    allowed = restored_from if isinstance(restored_from, tuple) else (restored_from,)
    assert summary["resumed_from"] in allowed and summary["steps"] == 8
    assert metric_rows(tmp_path) == metric_rows(reference)  # every step once, identical values
    assert all(r["applied"] for r in metric_rows(reference) if "applied" in r)
    ours, theirs = load_file(tmp_path / "final/model.safetensors"), load_file(reference / "final/model.safetensors")
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)  # bitwise
    completions = [json.loads(line)["step"] for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    reference_completions = [json.loads(line)["step"] for line in (reference / "completions.jsonl").read_text().splitlines()]
    assert completions == reference_completions


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_resume_continues(reference, tmp_path):
    proc = run_in_subprocess(resume_config(), tmp_path, "sigterm:5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preempted"] and summary["steps"] == 5
    assert 5 in Checkpointer(tmp_path / "checkpoints").steps()
    assert not (tmp_path / "final").exists()
    assert train(resume_config(), tmp_path, progress=False)["resumed_from"] == 5
    assert metric_rows(tmp_path) == metric_rows(reference)


@pytest.mark.slow
def test_a_stop_during_a_rollout_saves_the_step_before_it_and_resume_continues(reference, tmp_path):
    """SIGTERM while a rollout is sampled: the step before it is checkpointed (not a multiple of
    checkpoint.every) without the unused rollout, and the resumed run samples it again."""
    proc = run_in_subprocess(resume_config(), tmp_path, "sigterm-rollout:5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preempted"] and summary["steps"] == 4
    assert 4 in Checkpointer(tmp_path / "checkpoints").steps()
    assert train(resume_config(), tmp_path, progress=False)["resumed_from"] == 4
    assert metric_rows(tmp_path) == metric_rows(reference)
    assert (tmp_path / "completions.jsonl").read_text() == (reference / "completions.jsonl").read_text()


class Probe(Callback):
    """Adds a metric to every step's row and asks the run to stop after step `stop_at`."""

    def __init__(self, stop_at: int):
        self.stop_at = stop_at

    def on_step(self, trainer, state, batch, row):
        row["probe/step_squared"] = state.step**2

    def after_step(self, trainer, state, batch, row):
        trainer.stop.requested = state.step == self.stop_at


def quick_config(**kw) -> TrainConfig:
    return tiny_config(steps=6, prompts_per_rollout=8, eval_every=0, **kw,
                       sampling=SamplingConfig(num_samples=4, max_new_tokens=2, max_prompt_len=16))


def test_callbacks_add_metrics_and_can_end_a_run_with_a_checkpoint(tmp_path):
    import shutil

    config = quick_config(checkpoint=CheckpointConfig(every=100))
    summary = train(config, tmp_path, progress=False, callbacks=[Probe(stop_at=3)])
    assert summary["preempted"] and summary["steps"] == 3 and not (tmp_path / "final").exists()
    assert Checkpointer(tmp_path / "checkpoints").steps() == [3]  # the stop's checkpoint (every=100)
    assert [r["probe/step_squared"] for r in metric_rows(tmp_path) if r["step"]] == [1, 4, 9]
    # Saving turned off on resume (allowed): the run still restores from its checkpoint and finishes.
    summary = train(dataclasses.replace(config, checkpoint=CheckpointConfig(every=0)), tmp_path, progress=False)
    assert summary["resumed_from"] == 3 and summary["steps"] == 6 and not summary["preempted"]
    assert [r["step"] for r in metric_rows(tmp_path)] == [0, 1, 2, 3, 4, 5, 6]
    shutil.rmtree(tmp_path / "final")  # a stop after the last step changes nothing: the run is complete
    config = dataclasses.replace(config, steps=7)
    summary = train(config, tmp_path, progress=False, callbacks=[Probe(stop_at=7)])
    assert summary["steps"] == 7 and not summary["preempted"] and (tmp_path / "final" / "model.safetensors").is_file()


def test_checkpoints_of_the_previous_format_are_named(tmp_path):
    import shutil

    config = quick_config(checkpoint=CheckpointConfig(every=1))
    train(dataclasses.replace(config, steps=1), tmp_path, progress=False)
    shutil.rmtree(tmp_path / "checkpoints")
    old = Checkpointer(tmp_path / "checkpoints")  # r1zero 0.1: params and opt_state, counters in the meta
    old.save(1, small_state(), None, {"progress": {"step": 1}, "versions": {"r1zero": "0.1.0"}})
    old.close()
    with pytest.raises(UserError, match="holds checkpoints of r1zero 0.1.0, whose train state this version cannot"):
        train(config, tmp_path, progress=False)


def test_a_hand_edited_config_and_a_torn_log_line(reference, tmp_path):
    """config.json edited by hand after the checkpoints were written is refused (naming the key);
    a metrics line cut short by a kill or a full disk is dropped on resume, not fatal."""
    import shutil

    from r1zero.train import load_run_config

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    saved = json.loads((run / "config.json").read_text())
    edited = json.loads(json.dumps(saved))
    edited["optim"]["learning_rate"] = 0.5
    (run / "config.json").write_text(json.dumps(edited))
    with pytest.raises(UserError, match=r"config.json differs from the config its checkpoints were written with "
                                        r"\(changed: optim.learning_rate"):
        train(load_run_config(run), run, progress=False)
    (run / "config.json").write_text(json.dumps(saved))
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "loss": 0.12')  # no newline: the write was cut short
    assert train(resume_config(), run, progress=False)["resumed_from"] == 8
    assert metric_rows(run) == metric_rows(reference)
    lines = (run / "metrics.jsonl").read_text().splitlines()  # damaged rows in the middle: left out, file kept
    (run / "metrics.jsonl").write_text("\n".join(lines[:3] + ["[1, 2]", '{"step": "1"}', "{oops"] + lines[3:]) + "\n")
    (run / "checkpoints" / "8" / "meta" / "metadata").write_text("{}")  # valid JSON, not a record
    assert train(resume_config(), run, progress=False)["resumed_from"] == 6  # step 8 is unusable: set aside
    assert metric_rows(run) == metric_rows(reference)
    assert (run / "metrics.jsonl.before-resume").is_file() and (run / "checkpoints-unusable" / "8").is_dir()


def test_one_trainer_per_run_directory_and_stale_locks_are_taken_over(tmp_path):
    from r1zero.train import RunLock

    config = quick_config(checkpoint=CheckpointConfig(every=1))
    with RunLock(tmp_path):  # a live holder: refused, by name, before anything is read or written
        with pytest.raises(UserError, match=rf'in use by another trainer \(.*"pid": {os.getpid()}'):
            train(config, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # only the holder's own file
    code = ("import os, signal, sys; from pathlib import Path; from r1zero.train import RunLock; "
            "RunLock(Path(sys.argv[1])).acquire(); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, timeout=300)
    assert proc.returncode == -9 and '"pid": ' in (tmp_path / ".lock").read_text()  # left behind by a dead run
    assert train(dataclasses.replace(config, steps=2), tmp_path, progress=False)["steps"] == 2
    assert "released" in (tmp_path / ".lock").read_text()


def small_state(value: float = 1.0):
    return {"params": {"w": jnp.full((4, 3), value), "b": jnp.arange(3.0)}, "opt_state": {"count": jnp.asarray(2)}}


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def corrupt(step_dir: Path) -> None:
    for p in step_dir.rglob("*"):
        if p.is_file() and "state" in str(p) and p.stat().st_size > 0:
            p.write_bytes(b"garbage")  # truncated/unreadable data files


def test_an_unusable_newest_step_is_moved_aside_and_never_costs_the_good_one(tmp_path, caplog):
    directory = tmp_path / "checkpoints"
    ckpt = Checkpointer(directory, keep=5)
    for step in (1, 2):
        ckpt.save(step, small_state(step), {"x": np.full(2, step)} if step == 2 else None, {"step": step})
    ckpt.close()
    corrupt(directory / "2")
    ckpt = Checkpointer(directory, keep=1)  # retention of one step: the good one must survive the bad one
    step, state, rollout, meta = ckpt.restore_latest(abstract(small_state()))
    assert step == 1 and meta["step"] == 1 and float(state["params"]["w"][0, 0]) == 1.0 and rollout is None
    assert "checkpoint step 2" in caplog.text and "unusable" in caplog.text
    assert ckpt.steps() == [1] and "could not be restored" in (tmp_path / "checkpoints-unusable/2/UNUSABLE.txt").read_text()
    assert ckpt.save(2, small_state(2), None, {"step": 2})  # the run can pass step 2 again
    ckpt.wait()
    assert ckpt.steps() == [2] and float(ckpt.restore_latest(abstract(small_state()))[1]["params"]["w"][0, 0]) == 2.0
    ckpt.save(3, small_state(3), None, {"step": 3})
    ckpt.close()
    assert Checkpointer(directory).steps() == [3]
    corrupt(directory / "3")
    with pytest.raises(UserError, match=r"no usable checkpoint .*step 3: "):
        Checkpointer(directory).restore_latest(abstract(small_state()))
    assert Checkpointer(directory).steps() == [3]  # nothing restored: nothing moved


def test_nonfinite_parameters_are_never_saved_and_retention_keeps_last_and_best(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=2, best_metric="eval/acc")
    bad = small_state()
    bad["params"]["w"] = bad["params"]["w"].at[0, 0].set(jnp.nan)
    assert not ckpt.save(1, bad, None, {})
    for step, acc in ((2, 0.9), (3, 0.1), (4, 0.2), (5, 0.3)):
        assert ckpt.save(step, small_state(step), None, {"end_eval": {"eval/acc": acc}})
    ckpt.save(6, small_state(6), None, {"end_eval": {"eval/acc": 0.0}})
    ckpt.close()
    assert Checkpointer(tmp_path).steps() == [2, 5, 6]  # the best (2) and the last two


@pytest.mark.slow
def test_restore_on_other_meshes():
    script = r'''
import json, numpy as np, jax
from r1zero.checkpoint import Checkpointer
from r1zero.config import MeshConfig, ModelConfig
from r1zero.models import create_model, to_host_arrays
from r1zero.sharding import make_mesh
from flax import nnx
import sys, tempfile
cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8)
d = tempfile.mkdtemp()
src = create_model(cfg, make_mesh(MeshConfig(2, 4, 1)), seed=3)
params = nnx.state(src, nnx.Param)
ck = Checkpointer(d); ck.save(1, {"params": params, "opt_state": {}}, None, {}); ck.close()
ok = []
for mc, devs in ((MeshConfig(8, 1, 1), None), (MeshConfig(1, 1, 1), jax.devices()[:1])):
    mesh = make_mesh(mc, devs)
    target = nnx.state(create_model(cfg, mesh, seed=0), nnx.Param)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
    step, state, _, _ = Checkpointer(d).restore_latest({"params": abstract, "opt_state": {}})
    same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(params)))
    on_mesh = all(x.sharding.mesh.shape == mesh.shape for x in jax.tree.leaves(state["params"]))
    ok.append(same and on_mesh)
print(json.dumps(ok))
'''
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [True, True]


def test_export_round_trip_through_transformers(reference, tmp_path):
    import torch
    import transformers

    from r1zero.models import hf, positions_from_mask

    out = tmp_path / "hf"
    assert main(["export", "--workdir", str(reference), "--step", "6", "--out", str(out)]) == 0
    model, _ = hf.load_model(out)
    ids = np.asarray([[3, 7, 1, 9, 4, 2]])
    mask = jnp.ones(ids.shape, bool)
    ours, _ = model(jnp.asarray(ids), positions_from_mask(mask), mask)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = theirs(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours), logits, atol=1e-5)
    final = load_file(reference / "final/model.safetensors")  # step 6 is not the end: different weights
    assert any(not np.array_equal(load_file(out / "model.safetensors")[k], final[k]) for k in final)
    assert main(["export", "--workdir", str(reference), "--step", "5", "--out", str(out)]) == 2
    import shutil

    run = tmp_path / "run"  # the newest step unusable: export takes the newest usable one, moving nothing
    shutil.copytree(reference, run)
    corrupt(run / "checkpoints" / "8")
    assert main(["export", "--workdir", str(run), "--out", str(tmp_path / "hf6")]) == 0
    exported = load_file(tmp_path / "hf6" / "model.safetensors")
    assert all(np.array_equal(exported[k], load_file(out / "model.safetensors")[k]) for k in exported)  # step 6
    assert (run / "checkpoints" / "8").is_dir() and not (run / "checkpoints-unusable").exists()


def test_resume_rules_of_the_train_command(reference, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    config = str(ROOT / "configs" / "max_digits.py")
    assert main(["train", "--workdir", str(run), "--config", config]) == 2
    assert "different config" in capsys.readouterr().err
    assert main(["train", "--workdir", str(run), "--set", "optim.learning_rate=1.0"]) == 2
    assert "changed: optim.learning_rate" in capsys.readouterr().err
    assert main(["train", "--workdir", str(tmp_path / "new")]) == 2
    assert "--config is needed" in capsys.readouterr().err
    # Harmless fields may change and are recorded: run two more steps.
    assert main(["train", "--workdir", str(run), "--steps", "10", "--set", "eval_every=5", "--no-progress"]) == 0
    assert "resumed from step 8" in capsys.readouterr().out
    assert json.loads((run / "overrides.jsonl").read_text().splitlines()[-1]) == {"eval_every": 5, "steps": 10}
    assert [r["step"] for r in metric_rows(run)][-3:] == [8, 9, 10]


def test_a_checkpoints_rows_split_over_the_hosts_that_resume():
    from r1zero.train import host_rows

    saved = {"tokens": np.arange(16 * 3).reshape(16, 3), "adv": np.arange(16, dtype=np.float32)}
    assert np.array_equal(host_rows(saved, 0, 1, 4)["tokens"], saved["tokens"])
    second = host_rows(saved, 1, 2, 4)
    assert np.array_equal(second["adv"], np.arange(8, 16)) and np.array_equal(second["tokens"], saved["tokens"][8:])
    assert [len(host_rows(saved, i, 4, 4)["adv"]) for i in range(4)] == [4] * 4
    with pytest.raises(UserError, match="4 groups, which do not split over 3 hosts"):
        host_rows(saved, 0, 3, 4)
    with pytest.raises(UserError, match="2 groups, which do not split over 4 hosts"):
        host_rows(saved, 0, 4, 8)  # 16 rows over 4 hosts, but groups of 8
