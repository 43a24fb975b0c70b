"""model_dir as a Hugging Face Hub id, read offline from a cache this test lays out the way
huggingface_hub does (models--org--name/{refs,snapshots}): resolution, revisions, errors that name
the id and the cache, the revision a run records, and a resume that keeps loading that revision."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import r1zero
from r1zero.config import CheckpointConfig, SamplingConfig, TaskConfig, TrainConfig
from r1zero.errors import MissingFileError, UserError
from r1zero.models import hub

BASE = Path(r1zero.__file__).parent / "assets" / "base_mult2"  # the shipped 0.8M base model
SHA1, SHA2 = "1" * 40, "2" * 40


def lay_out_cache(cache: Path, repo: str = "r1zero-test/base") -> Path:
    """Two commits of `repo`: main -> SHA1 (the shipped base), branch v2 -> SHA2 (the same weights
    with one more special token in the config, so a test can tell which one was loaded)."""
    storage = cache / ("models--" + repo.replace("/", "--"))
    for sha in (SHA1, SHA2):
        shutil.copytree(BASE, storage / "snapshots" / sha, ignore=shutil.ignore_patterns("pretrain*"))
    cfg = json.loads((storage / "snapshots" / SHA2 / "config.json").read_text())
    (storage / "snapshots" / SHA2 / "config.json").write_text(json.dumps({**cfg, "rms_norm_eps": 1e-5}))
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(SHA1)
    (storage / "refs" / "v2").write_text(SHA2)
    return storage


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    storage = lay_out_cache(cache)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache, storage


def test_hub_ids_resolve_to_cached_snapshots_by_revision(offline_cache):
    cache, storage = offline_cache
    for spec, sha in (("r1zero-test/base", SHA1), ("r1zero-test/base@main", SHA1), ("r1zero-test/base@v2", SHA2),
                      (f"r1zero-test/base@{SHA2}", SHA2)):
        source = hub.resolve(spec)
        assert (source.path, source.repo_id, source.revision) == (storage / "snapshots" / sha, "r1zero-test/base", sha)
    assert hub.resolve("r1zero-test/base", revision=SHA2).revision == SHA2  # a recorded revision pins it


def test_local_directories_stay_local(tmp_path, monkeypatch):
    assert hub.resolve(str(BASE)) == hub.ModelSource(BASE)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)  # a relative path that looks like an id but exists
    assert hub.resolve("org/name").path == Path("org/name")
    with pytest.raises(MissingFileError, match="model directory ./nowhere does not exist"):
        hub.resolve("./nowhere")
    assert not hub.is_hub_id("/abs/path") and not hub.is_hub_id("../x") and not hub.is_hub_id("a/b/c")


def test_what_is_not_cached_offline_is_an_error_naming_id_revision_and_cache(offline_cache):
    cache, _ = offline_cache
    with pytest.raises(MissingFileError) as e:
        hub.resolve("r1zero-test/missing")
    assert "r1zero-test/missing" in str(e.value) and str(cache) in str(e.value) and "HF_HUB_OFFLINE" in str(e.value)
    with pytest.raises(MissingFileError, match="r1zero-test/base at revision nope"):
        hub.resolve("r1zero-test/base@nope")


def test_a_snapshot_without_config_is_named(offline_cache):
    _, storage = offline_cache
    (storage / "snapshots" / SHA2 / "config.json").unlink()
    with pytest.raises(MissingFileError, match="has no config.json"):
        hub.resolve("r1zero-test/base@v2")


def tiny_run(model_dir: str, steps: int) -> TrainConfig:
    return TrainConfig(model_dir=model_dir, steps=steps, prompts_per_rollout=2, eval_every=0, log_completions=0,
                       sampling=SamplingConfig(num_samples=2, max_new_tokens=8, max_prompt_len=32),
                       task=TaskConfig(dataset="multiply", difficulty=2, template="dialogue", rewards=("answer",),
                                       accuracy_reward="answer", eval_size=2),
                       checkpoint=CheckpointConfig(every=1))


@pytest.mark.slow
def test_a_run_records_the_revision_and_its_resume_keeps_it(offline_cache, tmp_path):
    from r1zero.train import train

    _, storage = offline_cache
    workdir = tmp_path / "run"
    train(tiny_run("r1zero-test/base", 1), workdir, progress=False)
    record = json.loads((workdir / "model_source.json").read_text())
    assert record == {"model_dir": "r1zero-test/base", "repo_id": "r1zero-test/base", "revision": SHA1,
                      "path": str(storage / "snapshots" / SHA1)}
    (storage / "refs" / "main").write_text(SHA2)  # a newer upload on main after the run started
    train(tiny_run("r1zero-test/base", 2), workdir, progress=False)
    assert json.loads((workdir / "model_source.json").read_text())["revision"] == SHA1
    fresh = tmp_path / "fresh"  # a new run takes main as it is now
    train(tiny_run("r1zero-test/base", 1), fresh, progress=False)
    assert json.loads((fresh / "model_source.json").read_text())["revision"] == SHA2
    assert json.loads((fresh / "model_config.json").read_text())["rms_norm_eps"] == 1e-5


def test_the_command_line_honours_hf_home_and_offline_mode(tmp_path):
    lay_out_cache(tmp_path / "hf" / "hub")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-m", "r1zero", "info", "--model", "r1zero-test/base@v2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["revision"] == SHA2 and info["rms_norm_eps"] == 1e-5
    proc = subprocess.run([sys.executable, "-m", "r1zero", "info", "--model", "r1zero-test/gone"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "r1zero-test/gone" in proc.stderr and str(tmp_path / "hf" / "hub") in proc.stderr
    assert "Traceback" not in proc.stderr



@pytest.mark.slow
def test_a_run_whose_revision_record_is_damaged_is_refused_not_moved(offline_cache, tmp_path):
    from r1zero.train import train

    _, storage = offline_cache
    workdir = tmp_path / "run"
    train(tiny_run("r1zero-test/base", 1), workdir, progress=False)
    (storage / "refs" / "main").write_text(SHA2)
    for damaged in ("[]", '{"model_dir": "r1zero-test/base", "revision": null}', '{"model_dir": "other/x", '
                    f'"revision": "{SHA1}"}}', None):
        if damaged is None:
            (workdir / "model_source.json").unlink()
        else:
            (workdir / "model_source.json").write_text(damaged)
        with pytest.raises(UserError, match="model_source.json is missing or damaged"):
            train(tiny_run("r1zero-test/base", 2), workdir, progress=False)
    (workdir / "model_source.json").write_text(json.dumps({"model_dir": "r1zero-test/base", "revision": SHA1}))
    train(tiny_run("r1zero-test/base", 2), workdir, progress=False)  # restored by hand: resumes on SHA1
    assert json.loads((workdir / "model_config.json").read_text())["rms_norm_eps"] == 1e-6


def test_ids_the_hub_would_reject_and_damaged_caches_are_named(offline_cache):
    _, storage = offline_cache
    for spec in ("org/na--me", "org/-name", "a/b.git", "r1zero-test/base@../../x", "r1zero-test/base@a b"):
        with pytest.raises(UserError, match="model_dir"):
            hub.resolve(spec)
    (storage / "refs" / "main").write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match="damaged or unreadable"):
        hub.resolve("r1zero-test/base")
