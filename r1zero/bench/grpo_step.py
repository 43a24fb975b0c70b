"""The GRPO step side by side: r1zero, TRL and Tunix on identical work, each in its own process.

    python -m r1zero.bench.grpo_step                                  # r1zero alone, the base point
    python -m r1zero.bench.grpo_step --trl-python ~/trl/bin/python --tunix-python ~/tunix/bin/python \\
        --sweep all --rounds 2 --out grpo_step.jsonl                 # the README table

The work: a random Qwen2 (r1zero creates it and writes a HF directory: config.json, safetensors,
a byte-level BPE tokenizer.json trained here on Python's standard library; every library loads that
directory), P prompts of exactly 32 tokens x G samples, temperature 1 over the whole vocabulary,
beta 0 (`--beta`: a k3 KL term to a frozen reference in all three, each then running a reference
log-prob pass per rollout), one AdamW step per rollout, reward = characters of the completion / 64. `fixed` lengths:
no EOS, every row runs the whole budget. `realistic` lengths: the model's EOS token is made likelier
(its embedding row and a constant the last layer adds to every position point the same way; see
`bias_eos`), calibrated so completions end at different lengths with a long tail: about 5% reach
the budget, as in R1-Zero rollouts where a few answers run to the cap.

Each library runs its own training loop, started as its users start it; only timers are added (r1zero's
worker runs under the allocator its CLI picks on a CPU, `r1zero.hostalloc`, named in the table). A step is the time from the end of
one update to the end of the next (the first `--warmup` steps, which compile, are left out); generation is the
sampling call alone; log-probs are passes outside the update (old or reference log-probs: none at
beta 0 and one update per rollout, for all three; the reference's with `--beta`); the update is the rest of the optimizer step.
Libraries run one at a time, interleaved round by round in a rotating order so that drift on a
shared machine hits all alike. Medians (min-max) are over every timed step of every round.

Sweeps (`--sweep`): `base` (small model, 8 prompts x G=8, 64 new tokens, fixed), `G` (G = 4, 8,
16), `budget` (64, 128, 256 new tokens), `size` (small and large model), `realistic` (realistic
lengths at 64, 128 and 256 new tokens), `fixed` (the points of the first four), `all` (every one of
those points once).

MFU is the update's model FLOPs (6 x parameters x trained tokens, attention included) over the
update time and the machine's peak: on CPU the float32 matmul speed measured here (so CPU MFU is
relative to what this machine's matmuls reach), on a GPU its bf16 dense peak. Peak memory is the
process's peak resident set size (host), plus the accelerator's peak where there is one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from r1zero import hostalloc

HERE = Path(__file__).resolve().parent
PROMPT_LEN = 32
VOCAB = 2048
EOS_ID, PAD_ID = 0, 1
# Qwen2 shapes (HF config names), small = the peer shape of ../shared/bench/peer.
SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=32, vocab_size=VOCAB),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64, vocab_size=VOCAB),
    "large": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=2, head_dim=64, vocab_size=VOCAB),
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, head_dim=64, vocab_size=151936),
}
LIBS = ("r1zero", "trl", "tunix")
CORPUS = ["argparse.py", "typing.py", "dataclasses.py", "inspect.py", "pathlib.py", "subprocess.py",
          "tarfile.py", "zipfile.py", "logging/__init__.py", "json/encoder.py", "email/message.py"]
END_FRACTION = 0.05  # realistic lengths: the share of completions that reach the budget


@dataclasses.dataclass(frozen=True)
class Point:
    shape: str = "small"
    prompts: int = 8
    G: int = 8
    max_new: int = 64
    lengths: str = "fixed"  # fixed | realistic
    beta: float = 0.0  # a KL term to a frozen reference

    @property
    def name(self) -> str:
        return f"{self.shape} {self.prompts}x{self.G} N={self.max_new} {self.lengths}" + (f" beta={self.beta:g}" if self.beta else "")


def sweep_points(sweep: str, base: Point) -> list[Point]:
    r = dataclasses.replace
    sets = {
        "base": [base],
        "G": [r(base, G=g) for g in (4, 8, 16)],
        "budget": [r(base, max_new=n) for n in (64, 128, 256)],
        "size": [r(base, shape=s) for s in ("small", "large")],
        "realistic": [r(base, max_new=n, lengths="realistic") for n in (64, 128, 256)],
    }
    if sweep in ("all", "fixed"):
        names = ("base", "G", "budget", "size") + (("realistic",) if sweep == "all" else ())
        return list(dict.fromkeys(p for name in names for p in sets[name]))  # each point once, in order
    if sweep not in sets:
        raise SystemExit(f"--sweep: one of {sorted(sets) + ['all', 'fixed']}, got {sweep!r}")
    return sets[sweep]


# ---------------------------------------------------------------------------------------------------
# The shared inputs: tokenizer, prompts, model directory.


def make_tokenizer(out: Path):
    """A byte-level BPE (vocab 2,048; id 0 EOS, id 1 pad) trained on Python's standard library,
    deterministic, saved as tokenizer.json + tokenizer_config.json (transformers' fast tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus_lines(), trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<|endoftext|>", "<|pad|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>",
        "padding_side": "left", "model_max_length": 4096, "add_bos_token": False}) + "\n")
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": EOS_ID, "pad_token_id": PAD_ID}) + "\n")
    return tok


def corpus_lines() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [line for name in CORPUS for line in (stdlib / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def make_prompts(tok, n: int) -> list[str]:
    """n windows of the corpus that are exactly PROMPT_LEN tokens and round-trip text -> ids -> text."""
    lines = corpus_lines()
    ids = tok.encode(" ".join(line.strip() for line in lines[5000:])).ids
    prompts, i = [], 0
    while len(prompts) < n and i + PROMPT_LEN < len(ids):
        text = tok.decode(ids[i:i + PROMPT_LEN])
        again = tok.encode(text).ids
        if again == ids[i:i + PROMPT_LEN] and tok.decode(again) == text and not {EOS_ID, PAD_ID} & set(again):
            prompts.append(text)
        i += PROMPT_LEN + 7
    if len(prompts) < n:
        raise SystemExit(f"only {len(prompts)} prompts of {PROMPT_LEN} tokens in the corpus, {n} asked")
    return prompts


def model_config(shape: str):
    from r1zero.config import ModelConfig

    s = SHAPES[shape]
    return ModelConfig(architecture="qwen2", vocab_size=s["vocab_size"], hidden_size=s["hidden_size"],
                       intermediate_size=s["intermediate_size"], num_layers=s["num_hidden_layers"],
                       num_heads=s["num_attention_heads"], num_kv_heads=s["num_key_value_heads"],
                       head_dim=s["head_dim"], qkv_bias=True, tie_embeddings=True, rope_theta=1e6,
                       max_position_embeddings=4096)


def bias_eos(model, strength: float) -> None:
    """Makes EOS likelier at every position, in the weights (so every library sees the same model):
    the last layer's value bias makes its attention add one constant vector c to every position's
    residual stream (attention weights sum to one), and EOS's embedding row (tied: also its output
    row) becomes c's direction, so EOS's logit grows with |c| = `strength` and still varies from
    position to position with the rest of the hidden state."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    layers = model.layers
    H, K = model.config.num_heads, model.config.num_kv_heads
    o_HxDhxD = np.asarray(layers.attn.o[...][-1])
    b_KxDh = np.asarray(jax.random.normal(jax.random.key(7), layers.attn.v_bias[...][-1].shape))
    c_D = np.einsum("hkd,hk->d", o_HxDhxD, np.repeat(b_KxDh, H // K, axis=0))
    scale = strength / np.linalg.norm(c_D)
    layers.attn.v_bias[...] = layers.attn.v_bias[...].at[-1].set(jnp.asarray(b_KxDh * scale, jnp.float32))
    row = np.linalg.norm(np.asarray(model.embed[...]), axis=1).mean()
    model.embed[...] = model.embed[...].at[EOS_ID].set(jnp.asarray(c_D / np.linalg.norm(c_D) * 8 * row, jnp.float32))


def sampled_lengths(model, tok_dir: Path, prompts: list[str], point: Point):
    """Completion lengths [P * G] of one sample of the point's prompts (EOS ends a row)."""
    import jax
    import numpy as np

    from r1zero import sampler
    from r1zero.config import SamplingConfig
    from r1zero.tokenizer import Tokenizer

    config = SamplingConfig(num_samples=point.G, max_new_tokens=point.max_new, temperature=1.0,
                            max_prompt_len=PROMPT_LEN, eos_ids=(EOS_ID,))
    s = sampler.sample(model, prompts[:point.prompts], jax.random.key(1), config, Tokenizer(tok_dir))
    return np.asarray(s.completion_mask.sum(1))


def build_model(work: Path, point: Point, prompts: list[str], tok_dir: Path) -> tuple[Path, dict]:
    """The point's model directory (made once, reused), and the length statistics of its samples."""
    import numpy as np

    from r1zero.config import MeshConfig
    from flax import nnx

    from r1zero.models import create_model, hf, param_count
    from r1zero.sharding import make_mesh

    name = point.shape if point.lengths == "fixed" else f"{point.shape}-eos{point.max_new}"
    out = work / name
    info_file = out / "bench_model.json"
    if info_file.is_file():
        return out, json.loads(info_file.read_text())
    model = create_model(model_config(point.shape), make_mesh(MeshConfig()), seed=0)
    info: dict = {"strength": None}
    if point.lengths == "realistic":  # bisect on |c| until END_FRACTION of the rows reach the budget
        lo, hi = 0.0, 64.0
        base = {k: np.asarray(v[...]) for k, v in (("v", model.layers.attn.v_bias), ("e", model.embed))}
        for _ in range(12):
            mid = (lo + hi) / 2
            model.layers.attn.v_bias[...], model.embed[...] = base["v"], base["e"]
            bias_eos(model, mid)
            lengths = sampled_lengths(model, tok_dir, prompts, point)
            ended = float(np.mean(lengths >= point.max_new))
            lo, hi = (lo, mid) if ended < END_FRACTION else (mid, hi)
            if abs(ended - END_FRACTION) <= 0.02:
                break
        info.update(strength=mid, mean_length=float(lengths.mean()), median_length=float(np.median(lengths)),
                    p90_length=float(np.percentile(lengths, 90)), at_budget=ended)
    hf.save_model(model, out, tokenizer_dir=tok_dir)
    info["params"] = param_count(nnx.state(model, nnx.Param))
    info_file.write_text(json.dumps(info) + "\n")
    return out, info


# ---------------------------------------------------------------------------------------------------
# The r1zero worker (runs in its own process, like the peers).


def run_r1zero(spec: dict) -> dict:
    import random

    import jax

    from r1zero import rewards
    from r1zero import rollout as rollout_mod
    from r1zero import train as T
    from r1zero.config import (CheckpointConfig, GRPOConfig, OptimConfig, SamplingConfig, TaskConfig,
                               TrainConfig)

    @rewards.register("charlen")
    def charlen(completions, examples, context):
        return [rewards.Score(len(c) / 64.0) for c in completions]

    marks: dict = {"gen": [], "logprob": [], "update": [], "update_end": [], "tokens": [], "t0": time.perf_counter()}
    sample, update, logprobs = rollout_mod.sample, T.Trainer.update, T.Trainer.logprobs
    in_rollout = [False]

    def timed_sample(*a, **k):
        t = time.perf_counter()
        out = sample(*a, **k)  # numpy out: synchronous
        if in_rollout[0]:
            marks["gen"].append(time.perf_counter() - t)
            marks["tokens"].append(int(out.completion_mask.sum()))
        return out

    def timed_rollout(self, state):
        in_rollout[0] = True
        try:
            return rollout(self, state)
        finally:
            in_rollout[0] = False

    def timed_logprobs(self, *a, **k):
        t = time.perf_counter()
        out = logprobs(self, *a, **k)
        marks["logprob"].append(time.perf_counter() - t)
        return out

    def timed_update(self, *a, **k):
        t = time.perf_counter()
        out = update(self, *a, **k)  # fetches its stats: synchronous
        now = time.perf_counter()
        marks["update"].append(now - t)
        marks["update_end"].append(now)
        return out

    rollout = T.Trainer.rollout
    rollout_mod.sample = timed_sample
    T.Trainer.rollout, T.Trainer.logprobs, T.Trainer.update = timed_rollout, timed_logprobs, timed_update
    P, steps = spec["prompts"], spec["steps"]
    with tempfile.TemporaryDirectory(prefix="r1z-bench-") as tmp:
        # The P prompts train, in order; one more row is held out (r1zero holds out the first row of
        # random.Random(seed)'s shuffle: put it there).
        n, seed = P + 1, 0
        order = list(range(n))
        random.Random(seed).shuffle(order)
        rows, texts = [None] * n, iter(spec["prompt_texts"])
        rows[order[0]] = {"prompt": "held out row", "answer": "x"}
        rows = [r or {"prompt": next(texts), "answer": "x"} for r in rows]
        data = Path(tmp) / "prompts.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        config = TrainConfig(
            model_dir=spec["model_dir"],
            sampling=SamplingConfig(num_samples=spec["G"], max_new_tokens=spec["max_new"], temperature=1.0,
                                    max_prompt_len=PROMPT_LEN, eos_ids=(EOS_ID,) if spec["eos"] else ()),
            grpo=GRPOConfig(beta=spec.get("beta", 0.0)), optim=OptimConfig(learning_rate=1e-6, micro_batches=spec.get("micro_batches", 1),
                                                              share_prompts=spec.get("share_prompts", False)),
            task=TaskConfig(dataset="jsonl", path=str(data), template="plain", rewards=("charlen",),
                            reward_weights=(1.0,), accuracy_reward="charlen", eval_size=1),
            checkpoint=CheckpointConfig(every=0), seed=seed, steps=steps, prompts_per_rollout=P,
            eval_every=0, log_completions=0)
        T.train(config, Path(tmp) / "run", progress=False)
    return finish(spec, marks, lib="r1zero", versions={"jax": jax.__version__,
                                                     "allocator": os.environ.get("R1ZERO_ALLOCATOR", "system")})


def finish(spec: dict, marks: dict, lib: str, versions: dict) -> dict:
    """The worker's record: per-step seconds, the first `warmup` steps (compiling) left out."""
    ends, steps, w = marks["update_end"], spec["steps"], spec.get("warmup", 1)
    if len(ends) != steps or len(marks["gen"]) != steps:
        raise RuntimeError(f"{lib}: {len(ends)} updates and {len(marks['gen'])} generations for {steps} steps")
    step_s = [b - a for a, b in zip(ends, ends[1:])][w - 1:]
    rec = {"lib": lib, "point": spec["point"], "steps": steps, "warmup": w, "step_s": step_s, "gen_s": marks["gen"][w:],
           "logprob_s": per_step(marks.get("logprob", []), steps)[w:], "update_s": marks["update"][w:],
           "completion_tokens": marks["tokens"][w:], "warmup_s": ends[w - 1] - marks["t0"],
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **versions}
    rec.update(accelerator_peak_mb(lib))
    return rec


def per_step(times: list[float], steps: int) -> list[float]:
    """Log-prob pass times summed per step (0 when the library ran none)."""
    if not times:
        return [0.0] * steps
    k = len(times) // steps
    return [sum(times[i * k:(i + 1) * k]) for i in range(steps)]


def accelerator_peak_mb(lib: str) -> dict:
    try:
        if lib == "trl":
            import torch
            return {"device_peak_mb": torch.cuda.max_memory_allocated() / 2**20} if torch.cuda.is_available() else {}
        import jax
        stats = jax.devices()[0].memory_stats() or {}
        return {"device_peak_mb": stats["peak_bytes_in_use"] / 2**20} if "peak_bytes_in_use" in stats else {}
    except Exception:
        return {}


# ---------------------------------------------------------------------------------------------------
# The orchestration: points x rounds x libraries, each run a subprocess.


PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense FLOP/s by device name


def best_seconds(fn, x, repeats: int = 5) -> float:
    """The fastest of `repeats` timed calls of a jitted fn(x), after one that compiles."""
    fn(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return best


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the side-by-side ratios depend on it: each library's
    math kernels are tuned differently per CPU), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_flops() -> tuple[float, str]:
    """(FLOP/s, what it is): a GPU's bf16 dense peak by name, or this CPU's measured float32 matmul."""
    import jax
    import jax.numpy as jnp

    kind = jax.devices()[0].device_kind
    for name, flops in PEAK_BF16.items():
        if name in kind:
            return flops, f"{kind} bf16 dense peak"
    seconds = best_seconds(jax.jit(lambda x: x @ x), jnp.ones((2048, 2048), jnp.float32))
    return 2 * 2048**3 / seconds, f"{kind} float32 matmul measured here"


def update_flops(s: dict, rows: int, completion_tokens: float, prompt_len: int = PROMPT_LEN) -> float:
    """Model FLOPs of one update of a model with HF config `s`: forward + backward (x3) over prompt +
    completion tokens for the layers and attention, the output layer over the completion tokens only."""
    D, F, L, H, K, Dh, V = (s[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                           "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size"))
    per_token_layer = 2 * (D * (H + 2 * K) * Dh + H * Dh * D + 3 * D * F)
    T = prompt_len + completion_tokens / rows
    attention = 2 * 2 * H * Dh * T / 2  # scores and values against ~T/2 earlier positions on average
    tokens = rows * T
    return 3 * (tokens * L * (per_token_layer + attention) + completion_tokens * 2 * D * V)


def run_worker(lib: str, python: str, spec: dict, log: Path) -> dict | None:
    env = None  # the peers run as their users start them
    if lib == "r1zero":
        cmd = [python, "-m", "r1zero.bench.grpo_step", "--worker", json.dumps(spec)]
        env = hostalloc.allocator_env(dict(os.environ))  # as the r1zero CLI runs itself (hostalloc)
    else:
        cmd = [python, str(HERE / "peers" / f"{lib}_grpo.py"), json.dumps(spec)]
    with open(log, "a") as f:
        f.write(f"\n### {lib} {spec['point']} {time.strftime('%H:%M:%S')}\n")
        f.flush()
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        print(f"  {lib}: failed (exit {done.returncode}); see {log}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def summarize(records: list[dict], points: list[Point], peak: float) -> list[dict]:
    rows = []
    for point in points:
        for lib in LIBS:
            recs = [r for r in records if r["lib"] == lib and r["point"] == point.name]
            if not recs:
                continue
            cat = lambda key: [x for r in recs for x in r[key]]
            step, gen, lp, upd, toks = cat("step_s"), cat("gen_s"), cat("logprob_s"), cat("update_s"), cat("completion_tokens")
            med = statistics.median
            rows.append({
                "point": point.name, "lib": lib, "step_s": med(step), "step_min": min(step), "step_max": max(step),
                "gen_s": med(gen), "logprob_s": med(lp), "update_s": med(upd),
                "completion_tokens": statistics.mean(toks), "tokens_per_s": statistics.mean(toks) / med(step),
                "update_mfu": update_flops(SHAPES[point.shape], point.prompts * point.G, statistics.mean(toks)) / med(upd) / peak,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in recs),
                "device_peak_mb": max((r.get("device_peak_mb", 0) for r in recs), default=0) or None,
                "samples": len(step), "allocator": recs[0].get("allocator")})
        base = next((r for r in rows if r["point"] == point.name and r["lib"] == "r1zero"), None)
        for r in rows:
            if base and r["point"] == point.name:
                r["step_vs_r1zero"] = r["step_s"] / base["step_s"]
    return rows


def print_table(rows: list[dict], machine: str) -> None:
    print(f"\n{machine}\n")
    print("| point | library | step s (min-max) | generation | log-probs | update | tok/s | update MFU | peak RSS | x r1zero's step |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lib = f"{r['lib']} ({r['allocator']})" if r.get("allocator") else r["lib"]
        print(f"| {r['point']} | {lib} | {r['step_s']:.3f} ({r['step_min']:.2f}-{r['step_max']:.2f}) | "
              f"{r['gen_s']:.3f} | {r['logprob_s']:.3f} | {r['update_s']:.3f} | {r['tokens_per_s']:.0f} | "
              f"{100 * r['update_mfu']:.1f}% | {r['peak_rss_mb'] / 1024:.1f} GB | {r.get('step_vs_r1zero', 1):.2f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--trl-python", help="a python with trl and torch (README: how to make that venv)")
    p.add_argument("--tunix-python", help="a python with google-tunix")
    p.add_argument("--sweep", default="base", help="base | G | budget | size | realistic | fixed (the first four) | all")
    p.add_argument("--shape", default="small", choices=sorted(SHAPES), help="the base point's model")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--max-new", type=int, default=64)
    p.add_argument("--lengths", default="fixed", choices=("fixed", "realistic"))
    p.add_argument("--steps", type=int, default=6, help="steps per run, warm-up included")
    p.add_argument("--warmup", type=int, default=1,
                   help="steps per run not timed: they compile (r1zero compiles a decode program per phase and "
                        "batch fraction it meets, so realistic lengths need a few)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--micro-batches", type=int, default=1,
                   help="r1zero's optim.micro_batches: the update's rows sorted by length and cut into this many "
                        "micro-batches, each trimmed to its longest completion (must divide prompts x G)")
    p.add_argument("--share-prompts", action="store_true",
                   help="r1zero's optim.share_prompts: the update runs each group's prompt once, not once per row")
    p.add_argument("--beta", type=float, default=0.0,
                   help="a KL term to a frozen reference (k3) in every library: each then runs a reference "
                        "log-prob pass per rollout")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "r1zero-grpo-bench")
    p.add_argument("--out", type=Path, default=None, help="JSONL of every run and the summary rows")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(run_r1zero(json.loads(args.worker))), flush=True)
        return
    if args.warmup < 1 or args.steps <= args.warmup or args.rounds < 1:
        raise SystemExit("--warmup must be at least 1, --steps more than --warmup, --rounds at least 1")
    if not 0 <= args.beta < float("inf"):
        raise SystemExit(f"--beta must be a finite number >= 0, got {args.beta}")
    if args.prompts < 1 or args.G < 2 or args.max_new < 1:
        raise SystemExit("--prompts must be at least 1, --G at least 2 (a group of one has no advantage), "
                         "--max-new at least 1")
    rows = {pt.prompts * pt.G for pt in sweep_points(args.sweep, Point(args.shape, args.prompts, args.G, args.max_new))}
    if args.micro_batches < 1 or any(n % args.micro_batches for n in rows):
        raise SystemExit(f"--micro-batches {args.micro_batches} must divide the rows (prompts x G) of every point: "
                         f"{sorted(rows)}")
    pythons = {"r1zero": sys.executable, "trl": args.trl_python, "tunix": args.tunix_python}
    for lib, py in pythons.items():
        if py and not Path(py).is_file():
            raise SystemExit(f"--{lib}-python {py}: no such file")
    libs = [lib for lib in LIBS if pythons[lib]]
    base = Point(args.shape, args.prompts, args.G, args.max_new, args.lengths, args.beta)
    points = sweep_points(args.sweep, base)
    args.work.mkdir(parents=True, exist_ok=True)
    tok_dir = args.work / "tokenizer"
    tok = make_tokenizer(tok_dir)
    prompts = make_prompts(tok, max(pt.prompts for pt in points))
    peak, peak_what = peak_flops()
    import jax

    machine = (f"{platform.node()} | {cpu_model()} x{os.cpu_count()} | "
               f"{jax.devices()[0].device_kind} | {time.strftime('%Y-%m-%d')} | peak {peak / 1e9:.0f} GFLOP/s "
               f"({peak_what})")
    log = args.work / "workers.log"
    records = []
    for point in points:
        model_dir, info = build_model(args.work, point, prompts, tok_dir)
        spec = {"point": point.name, "model_dir": str(model_dir), "shape": SHAPES[point.shape],
                "prompt_texts": prompts[:point.prompts], "prompts": point.prompts, "G": point.G,
                "max_new": point.max_new, "eos": point.lengths == "realistic", "steps": args.steps,
                "warmup": args.warmup, "micro_batches": args.micro_batches,
                "share_prompts": args.share_prompts, "beta": point.beta}
        print(f"{point.name}: {info}", flush=True)
        for r in range(args.rounds):
            order = libs[r % len(libs):] + libs[:r % len(libs)]
            for lib in order:
                rec = run_worker(lib, pythons[lib], spec, log)
                if rec:
                    rec["round"] = r
                    records.append(rec)
                    print(f"  round {r} {lib}: step {statistics.median(rec['step_s']):.3f} s", flush=True)
                    if args.out:
                        with open(args.out, "a") as f:
                            f.write(json.dumps({"kind": "run", **rec}) + "\n")
    rows = summarize(records, points, peak)
    print_table(rows, machine)
    if args.out:
        with open(args.out, "a") as f:
            for row in rows:
                f.write(json.dumps({"kind": "summary", "machine": machine, **row}) + "\n")
    failed = len(points) * args.rounds * len(libs) - len(records)
    if failed:
        raise SystemExit(f"{failed} run(s) failed; see {log}")


if __name__ == "__main__":
    main()
