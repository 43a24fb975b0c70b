"""Frozen dataclass configs: the one config system of r1zero.

Every section is a frozen dataclass; `configs/*.py` return the top-level one and the command line
overrides fields with type checks (see `apply_overrides`). This module sits at the bottom of the
package: it imports nothing from r1zero but its error types.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from r1zero.errors import MissingFileError, UserError


def _need(ok: bool, key: str, rule: str, value: Any) -> None:
    """Config validation: a UserError naming the key, the rule and the value given."""
    if not ok:
        raise UserError(f"{key} must be {rule}, got {value!r}")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency-dependent rope scaling (HF `rope_type: llama3`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


DTYPES = ("float32", "bfloat16", "float16")


ARCHITECTURES = ("qwen2", "llama", "qwen3", "gemma3")
ACTIVATIONS = ("silu", "gelu_tanh")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of one decoder of the Qwen2/Qwen2.5, Qwen3, Llama 3 and Gemma 3 (text) families.

    One forward serves them all; the families differ in the fields below. `architecture` names the
    Hugging Face family the weights map to (names, config.json): it matters for import and export.
    """

    architecture: str = "qwen2"
    vocab_size: int = 256
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = False  # Qwen2: True
    o_bias: bool = False  # Llama `attention_bias: true` sets q/k/v and o bias
    tie_embeddings: bool = False
    max_position_embeddings: int = 32768
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    remat: bool = False  # recompute each layer's activations in the backward pass
    scan_layers: bool = False  # training runs the layers under jax.lax.scan (compile time flat in depth) instead of unrolled (faster steps)
    qk_norm: bool = False  # Qwen3, Gemma 3: RMSNorm over each head's queries and keys, before rope
    norm_plus_one: bool = False  # Gemma: every RMSNorm scales by (1 + w), in float32
    sandwich_norms: bool = False  # Gemma 3: a norm on the attention and MLP outputs too, before the residual add
    hidden_act: str = "silu"  # the gated MLP's activation: silu (SwiGLU) | gelu_tanh (Gemma's GeGLU)
    embed_scale: bool = False  # Gemma: embeddings times sqrt(hidden_size)
    query_pre_attn_scalar: float | None = None  # Gemma: scores times this ** -0.5; None: head_dim ** -0.5
    attn_softcap: float | None = None  # scores -> cap * tanh(scores / cap) (Gemma 2 style), None: off
    final_softcap: float | None = None  # the same on the output logits
    sliding_window: int | None = None  # a sliding layer's query sees the last this-many tokens (itself included)
    layer_types: tuple[str, ...] = ()  # "full" | "sliding" per layer; (): every layer full
    rope_local_theta: float = 10000.0  # rope base of sliding layers (Gemma 3: 10,000, no scaling)

    def __post_init__(self):
        _need(self.architecture in ARCHITECTURES, "model.architecture", " or ".join(ARCHITECTURES), self.architecture)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "max_position_embeddings"):
            _need(getattr(self, name) >= 1, f"model.{name}", ">= 1", getattr(self, name))
        _need(self.head_dim % 2 == 0, "model.head_dim", "even (rotary embeddings rotate pairs)", self.head_dim)
        _need(self.num_heads % self.num_kv_heads == 0, "model.num_heads",
              f"a multiple of model.num_kv_heads ({self.num_kv_heads})", self.num_heads)
        for name in ("rope_theta", "rms_norm_eps", "rope_local_theta"):
            _need(_finite(getattr(self, name)) and getattr(self, name) > 0, f"model.{name}", "> 0", getattr(self, name))
        for name in ("query_pre_attn_scalar", "attn_softcap", "final_softcap"):
            value = getattr(self, name)
            _need(value is None or (_finite(value) and value > 0), f"model.{name}", "None or > 0", value)
        for name in ("param_dtype", "compute_dtype"):
            _need(getattr(self, name) in DTYPES, f"model.{name}", " or ".join(DTYPES), getattr(self, name))
        _need(self.hidden_act in ACTIVATIONS, "model.hidden_act", " or ".join(ACTIVATIONS), self.hidden_act)
        _need(not self.layer_types or len(self.layer_types) == self.num_layers, "model.layer_types",
              f"one entry per layer ({self.num_layers})", self.layer_types)
        _need(set(self.layer_types) <= {"full", "sliding"}, "model.layer_types", "'full' or 'sliding' per layer",
              self.layer_types)
        _need("sliding" not in self.layer_types or (self.sliding_window or 0) >= 1, "model.sliding_window",
              ">= 1 where a layer slides", self.sliding_window)

    @property
    def sliding_layers(self) -> tuple[bool, ...]:
        """Per layer: does it attend within the sliding window?"""
        return tuple(t == "sliding" for t in self.layer_types) if self.layer_types else (False,) * self.num_layers


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes along (`data`, `fsdp`, `tensor`); one size may be -1 (all remaining devices)."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1

    def __post_init__(self):
        for name in ("data", "fsdp", "tensor"):
            _need(getattr(self, name) == -1 or getattr(self, name) >= 1, f"mesh.{name}", ">= 1 or -1",
                  getattr(self, name))


PARAM_LAYOUTS = ("auto", "train", "tensor", "replicated")  # see sharding.LAYOUTS


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How the rollout sampler generates completions.

    temperature 0 is greedy. top_p < 1 and top_k > 0 only shape what is sampled: log-probabilities
    are always those of the full softmax of logits / temperature (logits / 1 when greedy), the one
    definition the trainer uses. Training rollouts default to neither.
    """

    num_samples: int = 1  # G: completions per unique prompt
    max_prompt_len: int = 256
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    stop_strings: tuple[str, ...] = ()
    eos_ids: tuple[int, ...] | None = None  # None: the tokenizer's (generation_config.json)
    truncate_prompts: bool = False  # cut over-long prompts from the left (counted) instead of raising
    min_prompt_bucket: int = 16  # prompt lengths are padded to powers of two from here
    cache_dtype: str | None = None  # None: the model's compute dtype
    param_layout: str = "auto"  # auto | train | tensor | replicated: weights resharded for decoding (sharding.LAYOUTS)
    # Budgets of 64+ new tokens decode in phases of doubling cache length, finished rows dropped
    # between them (faster; growing the cache briefly holds the previous one beside it, up to 1.5x
    # the KV cache). False: one program over the whole cache, the lowest peak memory.
    decode_phases: bool = True

    def __post_init__(self):
        _need(_finite(self.temperature) and self.temperature >= 0, "sampling.temperature", ">= 0", self.temperature)
        _need(_finite(self.top_p) and 0 < self.top_p <= 1, "sampling.top_p", "in (0, 1]", self.top_p)
        _need(self.top_k >= 0, "sampling.top_k", ">= 0", self.top_k)
        for name in ("num_samples", "max_new_tokens", "max_prompt_len", "min_prompt_bucket"):
            _need(getattr(self, name) >= 1, f"sampling.{name}", ">= 1", getattr(self, name))
        _need(all(self.stop_strings), "sampling.stop_strings", "non-empty strings", self.stop_strings)
        _need(self.eos_ids is None or all(i >= 0 for i in self.eos_ids), "sampling.eos_ids", "token ids >= 0",
              self.eos_ids)
        _need(self.cache_dtype is None or self.cache_dtype in DTYPES, "sampling.cache_dtype",
              "None or " + " or ".join(DTYPES), self.cache_dtype)
        _need(self.param_layout in PARAM_LAYOUTS, "sampling.param_layout", " or ".join(PARAM_LAYOUTS),
              self.param_layout)


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """The objective (r1zero/grpo.py): advantages, clipping, aggregation, KL and DAPO's options."""

    advantage: str = "grpo"  # grpo | mean_only | rloo | batch_std
    std_ddof: int = 1  # unbiased group std, as TRL
    std_eps: float = 1e-4
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2  # DAPO clip-higher: 0.28
    aggregation: str = "seq-mean-token-mean"  # | token-mean | constant (Dr. GRPO)
    sequence_ratio: bool = False  # GSPO (use epsilons around 3e-4 / 4e-4)
    beta: float = 0.0  # KL coefficient; 0: no reference model is kept or run
    kl_estimator: str = "k3"
    ref_reset_every: int = 0  # steps; 0: never (R1: 400)
    mask_truncated: bool = False  # DAPO: completions cut by max_new_tokens get no loss
    overlong_cache: int = 0  # DAPO soft overlong penalty window in tokens; 0: off
    dynamic_sampling: bool = False  # DAPO: drop zero-std groups and sample more prompts
    max_sampling_tries: int = 3
    recompute_old_logprobs: bool = False  # old log-probs from a training forward, not the sampler

    def __post_init__(self):  # the names are checked against their registries by train.check_config
        _need(self.std_ddof in (0, 1), "grpo.std_ddof", "0 or 1", self.std_ddof)
        for name in ("std_eps", "epsilon_low", "epsilon_high", "beta"):
            _need(_finite(getattr(self, name)) and getattr(self, name) >= 0, f"grpo.{name}", "finite and >= 0",
                  getattr(self, name))
        _need(self.epsilon_low < 1, "grpo.epsilon_low", "< 1 (the ratio is clipped at 1 - epsilon_low)",
              self.epsilon_low)
        for name in ("ref_reset_every", "overlong_cache"):
            _need(getattr(self, name) >= 0, f"grpo.{name}", ">= 0", getattr(self, name))
        _need(self.max_sampling_tries >= 1, "grpo.max_sampling_tries", ">= 1", self.max_sampling_tries)


SCHEDULES = ("constant", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 1e-6
    schedule: str = "constant"  # constant | cosine | linear (decay to 0 at the last step)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    # Gradient accumulation inside each minibatch. K > 1 also sorts the rows by completion length and
    # cuts each micro-batch to its own longest: with long-tailed lengths, 4 about halves the update.
    micro_batches: int = 1
    # The update runs each group's prompt once and lets its G completions attend to its keys, instead
    # of once per row (the same loss up to float rounding; the prompt is most of a short completion).
    share_prompts: bool = False
    max_nonfinite_in_a_row: int = 5  # then the run stops

    def __post_init__(self):
        _need(self.schedule in SCHEDULES, "optim.schedule", " or ".join(SCHEDULES), self.schedule)
        for name in ("learning_rate", "weight_decay"):
            _need(_finite(getattr(self, name)) and getattr(self, name) >= 0, f"optim.{name}", "finite and >= 0",
                  getattr(self, name))
        for name in ("b1", "b2"):
            _need(_finite(getattr(self, name)) and 0 <= getattr(self, name) < 1, f"optim.{name}", "in [0, 1)",
                  getattr(self, name))
        for name in ("eps", "max_grad_norm"):
            _need(_finite(getattr(self, name)) and getattr(self, name) > 0, f"optim.{name}", "finite and > 0",
                  getattr(self, name))
        _need(self.warmup_steps >= 0, "optim.warmup_steps", ">= 0", self.warmup_steps)
        for name in ("micro_batches", "max_nonfinite_in_a_row"):
            _need(getattr(self, name) >= 1, f"optim.{name}", ">= 1", getattr(self, name))


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """What a run trains on: a dataset (a tfds builder read with grain), a prompt template, and
    weighted rewards. Dataset knobs are shared by name; each dataset documents which it reads."""

    dataset: str = "digits"  # digits | countdown | arithmetic | multiply | gsm8k | math | jsonl | code | humaneval | reasoning_gym:<name>
    template: str = "plain"  # plain | r1zero | dialogue | direct | step_by_step | qwen_math | chat
    rewards: tuple[str, ...] = ("exact_match",)
    reward_weights: tuple[float, ...] = (1.0,)
    accuracy_reward: str = "exact_match"  # the checker behind "accuracy" metrics, whatever is trained on
    train_size: int = 5000  # generated datasets
    eval_size: int = 128  # held-out examples (gsm8k: held-out templates), never trained on
    eval_split: str = "test"  # math: "champ" for the CHAMP competition problems
    difficulty: int = 3  # digits: digits per prompt; countdown: how many numbers; arithmetic, multiply: digits
    difficulty_b: int = 0  # multiply: digits of the second factor; 0: as difficulty
    operation: str = "max"  # digits: max|min|first|last|sum_mod10; arithmetic: add|mul|chain
    max_number: int = 100  # countdown
    max_target: int = 1000  # countdown
    path: str = ""  # jsonl, code: the file; gsm8k/math: the manual_dir with train/test files
    prompt_field: str = "prompt"  # jsonl
    answer_field: str = "answer"  # jsonl
    data_dir: str = ""  # where tfds materialises datasets; empty: <workdir>/data
    max_could_not_score: float = 0.5  # a rollout with a larger share of rows no reward could score stops the run

    def __post_init__(self):  # the dataset, template and reward names are checked by train.check_config
        _need(len(self.rewards) == len(self.reward_weights), "task.reward_weights",
              f"one weight per reward in task.rewards {self.rewards}", self.reward_weights)
        _need(bool(self.rewards), "task.rewards", "at least one reward", self.rewards)
        _need(all(_finite(w) for w in self.reward_weights) and any(self.reward_weights), "task.reward_weights",
              "finite numbers, not all 0", self.reward_weights)
        for name in ("train_size", "eval_size", "difficulty", "max_number", "max_target"):
            _need(getattr(self, name) >= 1, f"task.{name}", ">= 1", getattr(self, name))
        _need(self.difficulty_b >= 0, "task.difficulty_b", ">= 0", self.difficulty_b)
        _need(_finite(self.max_could_not_score) and 0 <= self.max_could_not_score <= 1, "task.max_could_not_score",
              "in [0, 1]", self.max_could_not_score)


@dataclasses.dataclass(frozen=True)
class CodeConfig:
    """The code reward (r1zero.rewards.code) and the sandbox its programs run in (r1zero.sandbox)."""

    isolation: str = "bwrap"  # bwrap | process: weaker (limits and a uid, no namespaces), flagged in the logs and run record
    workers: int = 0  # executions at once; 0: the machine's CPU count
    timeout_s: float = 20.0  # wall clock of one execution (all of one program's tests), enforced from outside;
    # within a scoring call, at most its fair share: batch_timeout_s x workers / executions
    test_timeout_s: float = 4.0  # one test: a call of the function, or one stdin/stdout case
    batch_timeout_s: float = 120.0  # one scoring call; executions left when it runs out "could not run"
    cpu_s: int = 10  # RLIMIT_CPU of each process in the sandbox
    memory_mb: int = 1024  # RLIMIT_AS of each process
    processes: int = 16  # RLIMIT_NPROC of the sandbox uid (threads count): with memory_mb, the memory bound
    file_mb: int = 16  # RLIMIT_FSIZE
    open_files: int = 64  # RLIMIT_NOFILE
    tmp_mb: int = 64  # the private /tmp of one execution
    output_bytes: int = 1 << 20  # the harness's output kept per execution (stdio tasks share it between cases)
    uid: int = 1_600_000_000  # as root, worker i runs as uid + 128 * b + i, b drawn per sandbox pool in [0, 65536)
    python: str = ""  # the interpreter inside; empty: the base interpreter of this one
    extract: str = "answer"  # answer: the last ```python block in <answer> (or the whole answer) | block: the last block anywhere
    partial_credit: bool = True  # reward: the passed fraction; False: 1 only when every test passes

    def __post_init__(self):
        _need(self.isolation in ("bwrap", "process"), "code.isolation", "bwrap or process", self.isolation)
        _need(self.extract in ("answer", "block"), "code.extract", "answer or block", self.extract)
        _need(0 <= self.workers <= 128, "code.workers", "in [0, 128]", self.workers)
        for name in ("timeout_s", "test_timeout_s", "batch_timeout_s"):
            _need(_finite(getattr(self, name)) and getattr(self, name) > 0, f"code.{name}", "> 0", getattr(self, name))
        for name in ("cpu_s", "memory_mb", "processes", "file_mb", "open_files", "tmp_mb", "output_bytes"):
            _need(getattr(self, name) >= 1, f"code.{name}", ">= 1", getattr(self, name))
        _need(self.memory_mb >= 64, "code.memory_mb", ">= 64 (a Python interpreter needs that much)", self.memory_mb)
        _need(self.open_files >= 16, "code.open_files", ">= 16 (the harness's own pipes)", self.open_files)
        _need(self.processes >= 4, "code.processes", ">= 4 (the harness, the program, the sandbox's init)",
              self.processes)
        _need(1000 <= self.uid < 2**31 - 2**23, "code.uid", "an unprivileged uid in [1000, 2**31 - 2**23)", self.uid)


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """The procedural pretraining corpus (r1zero/data/corpus.py)."""

    digits: int = 2  # digits of each factor (the difficulty knob)
    direct: float = 0.6  # shares of the three kinds (normalised)
    worked: float = 0.3
    self_check: float = 0.1
    tagged: float = 0.25  # share of documents written as User/Assistant with <think>/<answer> tags
    tagged_mix: tuple[float, ...] = ()  # (direct, worked, self_check) shares of tagged documents; (): as above
    mistake_rate: float = 0.5  # share of self-check documents whose first pass has a slip the check fixes
    held_out_every: int = 16  # about 1 pair in this many is held out (never in the corpus)
    digits_b: int = 0  # digits of the second factor; 0: as `digits` (3 and 2: 3x2-digit products)
    check: str = "swap"  # swap: the product recomputed with the factors swapped | nines: casting out nines, then a redo digit by digit
    check_reliability: float = 1.0  # nines: share of first checks whose verdict is right (else a false alarm or a miss)
    recheck: bool = False  # nines: the redo is checked too (always rightly: the redo is right)
    first_pass: str = "worked"  # nines: worked: partial products | guess: the product at once ("614*55=33770"), slips are near misses

    def __post_init__(self):
        for shares in ((self.direct, self.worked, self.self_check), self.tagged_mix or (1,)):
            if min(shares) < 0 or sum(shares) <= 0:
                raise UserError(f"corpus kind shares must be >= 0 and not all 0, got {shares}")
        if self.tagged_mix and len(self.tagged_mix) != 3:
            raise UserError(f"corpus.tagged_mix is (direct, worked, self_check), got {self.tagged_mix}")
        for name in ("tagged", "mistake_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"corpus.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.digits < 1 or self.held_out_every < 2 or self.digits_b < 0:
            raise UserError("corpus.digits must be >= 1, digits_b >= 0 and held_out_every >= 2")
        _need(self.check in ("swap", "nines"), "corpus.check", "swap or nines", self.check)
        _need(_finite(self.check_reliability) and 0 <= self.check_reliability <= 1, "corpus.check_reliability",
              "in [0, 1]", self.check_reliability)
        _need(self.check == "nines" or (self.check_reliability == 1 and not self.recheck), "corpus.check",
              "nines for check_reliability < 1 or recheck (the swap check is always right)", self.check)
        _need(self.first_pass in ("worked", "guess"), "corpus.first_pass", "worked or guess", self.first_pass)
        _need(self.check == "nines" or self.first_pass == "worked", "corpus.check", "nines for first_pass=guess",
              self.check)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every: int = 50  # steps between asynchronous saves; 0: none on the way (the end and a stop still save)
    keep: int = 3  # the newest steps kept
    best_metric: str = ""  # also keep the best step by this evaluation metric, e.g. eval/greedy_accuracy
    best_mode: str = "max"

    def __post_init__(self):
        _need(self.every >= 0, "checkpoint.every", ">= 0 (0: no periodic saves)", self.every)
        _need(self.keep >= 1, "checkpoint.keep", ">= 1", self.keep)
        _need(self.best_mode in ("max", "min"), "checkpoint.best_mode", "'max' or 'min'", self.best_mode)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation (r1zero/evaluate.py; `train`'s periodic one and `r1zero eval`): a greedy
    completion and `samples` sampled ones per problem at the sampling temperature, with pass@k and
    majority voting (maj@k) for each k in `ks`, best-of-N under the `best_of` rewards, 95% bootstrap
    intervals, and budget forcing (s1) when `min_think_tokens` or `max_think_tokens` is set."""

    samples: int = 1  # n: sampled completions per problem; 0: the greedy completion only
    ks: tuple[int, ...] = ()  # pass@k and maj@k (when the accuracy reward has answers to vote on) for these k (each at most `samples`)
    greedy: bool = True
    best_of: tuple[str, ...] = ()  # rewards that rank a problem's samples (best-of-N)
    vote_subsets: int = 64  # maj@k for k < n: the mean over this many random k-subsets (all, if fewer)
    bootstrap: int = 1000  # resamples of the problems for the 95% intervals
    batch_problems: int = 0  # problems per sampler call (r1zero eval: also the unit of resuming); 0: all
    min_think_tokens: int = 0  # budget forcing: an early </think> is replaced by `extend_with` until this many
    max_think_tokens: int = 0  # ... and thinking is closed (the answer forced) after this many; 0: off
    extend_with: str = " Wait,"

    def __post_init__(self):
        for name in ("vote_subsets", "bootstrap"):
            _need(getattr(self, name) >= 1, f"evaluation.{name}", ">= 1", getattr(self, name))
        _need(self.samples >= 1 or (self.samples == 0 and self.greedy), "evaluation.samples",
              ">= 1, or 0 (greedy only) with evaluation.greedy", self.samples)
        for name in ("batch_problems", "min_think_tokens", "max_think_tokens"):
            _need(getattr(self, name) >= 0, f"evaluation.{name}", ">= 0", getattr(self, name))
        _need(all(1 <= k <= self.samples for k in self.ks), "evaluation.ks",
              f"between 1 and evaluation.samples ({self.samples})", self.ks)
        _need(not self.max_think_tokens or self.max_think_tokens >= self.min_think_tokens,
              "evaluation.max_think_tokens", f"0 or at least evaluation.min_think_tokens ({self.min_think_tokens})",
              self.max_think_tokens)
        _need(bool(self.extend_with) or not self.min_think_tokens, "evaluation.extend_with",
              "non-empty when min_think_tokens is set", self.extend_with)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A GRPO run. Vocabulary: a *rollout* samples prompts_per_rollout x G completions; it is split
    into num_minibatches minibatches, each one *step* (one optimizer update); `mu` passes over the
    rollout, so a rollout is num_minibatches x mu steps. `steps` counts optimizer steps."""

    # With model_dir set, `model` fields left at their defaults come from its config.json; set ones must agree
    # with it (a recipe names its model's architecture), except param_dtype, compute_dtype and remat.
    model: ModelConfig = ModelConfig()
    model_dir: str = ""  # a local HF directory or a Hub id (org/name[@revision]); empty: random `model`, char tokenizer
    sampling: SamplingConfig = SamplingConfig(num_samples=8, max_new_tokens=16)
    grpo: GRPOConfig = GRPOConfig()
    optim: OptimConfig = OptimConfig()
    task: TaskConfig = TaskConfig()
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    evaluation: EvalConfig = EvalConfig()
    code: CodeConfig = CodeConfig()
    seed: int = 0
    steps: int = 100
    prompts_per_rollout: int = 16
    num_minibatches: int = 1
    mu: int = 1
    logprob_chunk_tokens: int = 4096
    eval_every: int = 20  # steps; 0: only at the start and the end
    log_completions: int = 4  # completions per rollout written to completions.jsonl

    def __post_init__(self):
        for name in ("steps", "prompts_per_rollout", "num_minibatches", "mu", "logprob_chunk_tokens"):
            _need(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        for name in ("eval_every", "log_completions"):
            _need(getattr(self, name) >= 0, name, ">= 0", getattr(self, name))
        _need(0 <= self.seed < 2**31, "seed", "in [0, 2**31)", self.seed)
        _need(self.prompts_per_rollout % self.num_minibatches == 0, "prompts_per_rollout",
              f"a multiple of num_minibatches ({self.num_minibatches})", self.prompts_per_rollout)
        rows = self.prompts_per_rollout // self.num_minibatches * self.sampling.num_samples
        _need(rows % self.optim.micro_batches == 0, "optim.micro_batches",
              f"a divisor of the {rows} rows of a minibatch (prompts_per_rollout / num_minibatches x "
              f"sampling.num_samples)", self.optim.micro_batches)
        # A group of one completion, or of identical greedy ones, has no spread: every step would be skipped.
        _need(self.sampling.num_samples >= 2, "sampling.num_samples",
              ">= 2 for training (group-relative advantages compare completions of one prompt)",
              self.sampling.num_samples)
        _need(self.sampling.temperature > 0, "sampling.temperature",
              "> 0 for training (greedy completions of one prompt are identical: zero advantage)",
              self.sampling.temperature)
        _need(self.grpo.overlong_cache < self.sampling.max_new_tokens, "grpo.overlong_cache",
              f"< sampling.max_new_tokens ({self.sampling.max_new_tokens})", self.grpo.overlong_cache)


# ---------------------------------------------------------------------------------------------------
# Command-line overrides: `--set section.key=value`.


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Next-token pretraining of a small base model on the procedural corpus (r1zero/pretrain.py).
    A step is one AdamW update on `batch_size` rows of `seq_len` tokens (whole documents packed).
    With `init_dir` it continues a model this command made (continued pretraining, e.g. a base primed
    with a new kind of document) instead of starting from a random init."""

    model: ModelConfig = ModelConfig()
    init_dir: str = ""  # a model directory written by `r1zero pretrain` to start from; "": a random init
    corpus: CorpusConfig = CorpusConfig()
    optim: OptimConfig = OptimConfig(learning_rate=3e-3, schedule="cosine", warmup_steps=100, weight_decay=0.01)
    mesh: MeshConfig = MeshConfig()
    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    seq_len: int = 128
    eval_every: int = 250  # steps between losses on the fixed evaluation batch; 0: only at the end
    eval_rows: int = 64  # rows of the fixed evaluation batch (its own stream of the seed)
    logprob_chunk_tokens: int = 8192

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_rows", "logprob_chunk_tokens"):
            _need(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        _need(self.seq_len >= 2, "seq_len", ">= 2", self.seq_len)
        _need(self.eval_every >= 0, "eval_every", ">= 0", self.eval_every)
        _need(0 <= self.seed < 2**31, "seed", "in [0, 2**31)", self.seed)


def apply_overrides(config: Any, overrides: list[str] | dict[str, str]) -> Any:
    """Returns `config` with dotted-key overrides applied, each value parsed to the field's type.

    An unknown key or a value of the wrong type raises UserError naming the key. The config is
    checked once, after every override (so overrides that only make sense together can come in
    any order).
    """
    items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
    data = to_dict(config)
    for key, raw in items:
        _set_path(type(config), data, key.split("."), raw, key)
    return from_dict(type(config), data)


def _split_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise UserError(f"override {text!r} must look like key=value")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _set_path(cls: type, data: dict, path: list[str], raw: str, full_key: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    if path[0] not in names:
        raise UserError(f"unknown config key {full_key!r}: {path[0]!r} is not one of {', '.join(sorted(names))}")
    hint = typing.get_type_hints(cls)[path[0]]
    if len(path) == 1:
        data[path[0]] = _parse_value(raw, hint, full_key)
        return
    sub = next((a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)), None)
    if sub is None or not isinstance(data[path[0]], dict):
        raise UserError(f"unknown config key {full_key!r}: {path[0]!r} has no sub-keys")
    _set_path(sub, data[path[0]], path[1:], raw, full_key)


def _parse_value(raw: str, annotation: Any, key: str) -> Any:
    """Parses `raw` as `annotation` (bool, int, float, str, tuples of those, or X | None)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw.lower() in ("none", "null") and len(args) < len(typing.get_args(annotation)):
            return None
        if len(args) == 1:
            return _parse_value(raw, args[0], key)
        raise UserError(f"config key {key!r} has a type that cannot be set from the command line")
    if origin is tuple:
        (elem, *_rest) = typing.get_args(annotation)
        return tuple(_parse_value(p.strip(), elem, key) for p in raw.split(",") if p.strip())
    if annotation is bool:
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise UserError(f"config key {key!r} expects true/false, got {raw!r}")
    if annotation in (int, float):
        try:
            return annotation(raw)
        except ValueError:
            raise UserError(f"config key {key!r} expects {annotation.__name__}, got {raw!r}") from None
    if annotation is str:
        return raw
    raise UserError(f"config key {key!r} has a type that cannot be set from the command line")


def to_dict(config: Any) -> dict:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """The dataclass `cls` from `to_dict` output (lists become tuples); unknown keys, values of the
    wrong type and values out of range are UserErrors that name `where` (e.g. the file)."""
    try:
        return _from_dict(cls, data, where)
    except UserError as e:
        if where == "config" or str(e).startswith(where):
            raise
        raise UserError(f"{where}: {e}") from None


def _from_dict(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where}: unknown keys {unknown}")
    return cls(**{name: _from_value(hints[name], value, f"{where}.{name}") for name, value in data.items()})


def _from_value(annotation: Any, value: Any, where: str) -> Any:
    """`value` (from JSON) as `annotation`; a value of the wrong type is a UserError naming `where`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(annotation)):
            return None
        return _from_value(args[0], value, where) if len(args) == 1 else value
    if dataclasses.is_dataclass(annotation):
        _need(isinstance(value, dict), where, "a JSON object", value)
        return _from_dict(annotation, value, where)
    if origin is tuple:
        _need(isinstance(value, (list, tuple)), where, "a list", value)
        (elem, *_rest) = typing.get_args(annotation)
        return tuple(_from_value(elem, v, f"{where}[{i}]") for i, v in enumerate(value))
    expected = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(annotation)
    if expected is not None:
        ok = isinstance(value, expected) and (annotation is bool or not isinstance(value, bool))
        _need(ok, where, f"of type {annotation.__name__}", value)
    return value


def load_config_file(path: str) -> Any:
    """Runs `get_config()` of a `configs/*.py` file and returns its dataclass."""
    import importlib.util
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise MissingFileError(f"config file {file} does not exist")
    if file.suffix != ".py":
        raise UserError(f"config file {file} is not a Python file (configs/NAME.py defining get_config())")
    spec = importlib.util.spec_from_file_location(f"r1zero_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise UserError(f"config file {file} defines no get_config()")
    config = module.get_config()
    if not dataclasses.is_dataclass(config):
        raise UserError(f"get_config() in {file} returned {type(config).__name__}, not a config dataclass")
    return config
