"""The `r1zero` command line: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import json
import sys

from r1zero.errors import UserError


def _score(args: argparse.Namespace) -> dict:
    import jax.numpy as jnp
    import numpy as np

    from r1zero.models import hf, hub, per_token_logprobs
    from r1zero.tokenizer import Tokenizer

    path = hub.resolve(args.model).path
    tok = Tokenizer(path)
    model, _ = hf.load_model(path)
    ids = tok.encode(args.text)
    if not ids:
        raise UserError("the text encodes to no tokens")
    tokens = jnp.asarray([ids], jnp.int32)
    logp, _ = per_token_logprobs(model, tokens, jnp.ones_like(tokens, bool), args.temperature)
    logp = np.asarray(logp[0], np.float64)
    return {
        "model": args.model,
        "token_ids": ids,
        "tokens": [tok.id_to_token(i) for i in ids],
        "logprobs": [None] + [float(x) for x in logp[1:]],  # the first token has no context
        "total_logprob": float(logp[1:].sum()),
    }


def _sample(args: argparse.Namespace) -> dict | str:
    import jax

    from r1zero.config import SamplingConfig
    from r1zero.models import hf, hub
    from r1zero.sampler import sample
    from r1zero.tokenizer import Tokenizer

    path = hub.resolve(args.model).path
    tok = Tokenizer(path)
    model, _ = hf.load_model(path)
    config = SamplingConfig(num_samples=args.n, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.top_k, max_new_tokens=args.max_new_tokens,
                            max_prompt_len=args.max_prompt_len, stop_strings=tuple(args.stop))
    s = sample(model, [args.prompt], jax.random.key(args.seed), config, tok)
    rows = [
        {"text": s.texts[r], "finish_reason": s.finish_reason[r],
         "token_ids": s.completion_tokens[r][s.completion_mask[r]].tolist(),
         "logprobs": [float(x) for x in s.logprobs[r][s.completion_mask[r]]]}
        for r in range(len(s.texts))
    ]
    if args.json:
        return {"model": args.model, "prompt": args.prompt, "completions": rows}
    return "\n".join(f"--- sample {i} ({r['finish_reason']}, {len(r['token_ids'])} tokens)\n{args.prompt}{r['text']}"
                     for i, r in enumerate(rows))


def _overridden(config, args: argparse.Namespace):
    """The config with the command line's --set, --steps and --seed applied (train and pretrain)."""
    import dataclasses

    from r1zero.config import apply_overrides

    config = apply_overrides(config, args.set)
    if args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    return config


def _train(args: argparse.Namespace) -> str:
    from pathlib import Path

    from r1zero.config import load_config_file
    from r1zero.train import load_run_config, train

    if args.config is None and not (Path(args.workdir) / "config.json").is_file():
        raise UserError(f"--config is needed: {args.workdir} holds no run to resume (no config.json)")
    config = _overridden(load_config_file(args.config) if args.config else load_run_config(args.workdir), args)
    summary = train(config, args.workdir, progress=not args.no_progress)
    counts = (f"steps {summary['steps']}, rollouts {summary['rollouts']}, skipped (empty) {summary['skipped_empty']}, "
              f"skipped (non-finite) {summary['skipped_nonfinite']}")
    if summary["preempted"]:
        return f"{counts}\nstopped by a signal at step {summary['steps']}; resume with: r1zero train --workdir {args.workdir}"
    import jax

    if jax.process_index() != 0:
        return counts
    from r1zero.report import write_report

    report = write_report([args.workdir])
    note = f"\nresumed from step {summary['resumed_from']}" if summary["resumed_from"] is not None else ""
    return (f"{report['table']}\n{counts}{note}\nrun directory: {args.workdir} "
            f"(report.md, plots/*.png, audit_epoch0.json, metrics.jsonl, final/)")


def _report(args: argparse.Namespace) -> str:
    from r1zero.report import write_report

    report = write_report([args.workdir, *args.compare], args.out, args.name or None)
    return f"{report['table']}\nwritten: {', '.join(str(f) for f in report['files'])}"


def _pretrain(args: argparse.Namespace) -> str:
    import shlex

    from r1zero.config import load_config_file
    from r1zero.pretrain import pretrain

    config = _overridden(load_config_file(args.config), args)
    command = "r1zero " + " ".join(shlex.quote(a) for a in args.argv)  # recorded with the base model
    s = pretrain(config, args.workdir, progress=not args.no_progress, command=command)
    return (f"pretrained {s['params']:,} parameters for {s['steps']} steps ({s['tokens']:,} tokens, {s['seconds']:.0f} s): "
            f"evaluation loss {s['eval_loss']:.4f} nats/token\nbase model: {args.workdir}/model")


def _export(args: argparse.Namespace) -> str:
    from r1zero.train import export_run

    step, out = export_run(args.workdir, args.out, args.step)
    return f"exported step {step} to {out}"


def _convert(args: argparse.Namespace) -> dict:
    from r1zero.models.gguf import convert_gguf

    return convert_gguf(args.gguf, args.out, args.dtype)


def _info(args: argparse.Namespace) -> dict | str:
    import dataclasses

    from r1zero.models import abstract_model, hf, hub, param_count

    if args.config and args.model:
        raise UserError("give --model or --config, not both")
    if args.devices < 1:
        raise UserError(f"--devices must be at least 1, got {args.devices}")
    if args.config:
        return _recipe_table(args.config, args.devices)
    if not args.model:
        raise UserError("give --model (a model directory or Hub id) or --config (run configs)")
    source = hub.resolve(args.model)
    config = hf.read_config(source.path)
    return {"model": args.model, "path": str(source.path), "revision": source.revision,
            "parameters": param_count(abstract_model(config)[1]), **dataclasses.asdict(config)}


def _recipe_table(paths: list[str], devices: int) -> str:
    """Per config: the model's parameter count and what a device holds (r1zero.memory) on `devices`."""
    from r1zero import memory
    from r1zero.config import ModelConfig, TrainConfig, load_config_file
    from r1zero.models import abstract_model, hf, hub, param_count

    head = ("| config | model | parameters | mesh (data, fsdp, tensor) | dtype | params + Adam + ref GiB "
            "| rollout: + decode weights + KV cache GiB | update: + gradients GiB |\n|---|---|---|---|---|---|---|---|")
    rows = [head]
    for path in paths:
        config = load_config_file(path)
        if not isinstance(config, TrainConfig):
            raise UserError(f"{path}: get_config() returns {type(config).__name__}, not a TrainConfig")
        model = config.model  # a recipe names its model's architecture: nothing to download
        if config.model_dir and model == ModelConfig():
            source = hub.resolve(config.model_dir)
            model = hf.run_model_config(source.path, model)
        mesh = memory.mesh_shape(config, devices)
        m = memory.per_device(config, model, mesh)
        rows.append(f"| {path} | {config.model_dir or model.architecture} | {param_count(abstract_model(model)[1]):,} "
                    f"| ({mesh['data']}, {mesh['fsdp']}, {mesh['tensor']}) | {model.param_dtype} "
                    f"| {m['params'] + m['optimizer'] + m['reference']:.2f} | {m['rollout_peak']:.2f} "
                    f"| {m['update_peak']:.2f} |")
    return "\n".join(rows) + ("\n(per device; activations and XLA temporaries not counted: see r1zero/memory.py)")


def _eval(args: argparse.Namespace) -> str:
    import dataclasses
    import shlex
    from pathlib import Path

    from r1zero import eval_run

    if args.model and args.compare:
        raise UserError("give --model or --compare, not both")
    if args.compare is not None and len(args.compare) < 2:
        raise UserError("--compare needs two models or more (the first is the base)")
    models = args.compare or ([args.model] if args.model else [])
    if not models:
        raise UserError("give --model (a model directory, Hub id or run[@step]) or --compare BASE OTHER ...")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    if not 0 <= args.n <= 4096:
        raise UserError(f"--n must be between 0 (greedy only) and 4096, got {args.n}")
    config = eval_run.base_config(models, args.task, args.set)
    ints = lambda text, what: sorted({_int(x, what) for x in text.split(",") if x.strip()})
    n = args.n
    ks = ints(args.k, "--k") if args.k else sorted({1, n} | {k for k in (4, 16, 64) if k < n}) if n else []
    budgets = [(lo, args.max_think_tokens) for lo in (ints(args.min_think_tokens, "--min-think-tokens") or [0])]
    sampling = config.sampling
    if args.temperature is not None:
        sampling = dataclasses.replace(sampling, temperature=args.temperature)
    if args.max_new_tokens is not None:
        sampling = dataclasses.replace(sampling, max_new_tokens=args.max_new_tokens)
    if args.split:
        config = dataclasses.replace(config, task=dataclasses.replace(config.task, eval_split=args.split))
    evaluation = dataclasses.replace(  # the flags over the config's evaluation (and --set evaluation.*)
        config.evaluation, samples=n, ks=tuple(ks), best_of=tuple(dict.fromkeys(args.best_of)),
        batch_problems=args.batch_problems, extend_with=args.extend_with, greedy=not args.no_greedy)
    config = dataclasses.replace(config, sampling=sampling, evaluation=evaluation,
                                 seed=args.seed if args.seed is not None else config.seed)
    templates = [t.strip() for t in (args.template if args.template is not None else config.task.template).split(",")
                 if t.strip()]
    run = next((m.split("@", 1)[0] for m in models if eval_run.is_run(m)), None)  # the (first) run gets eval/
    out = Path(args.out or (Path(run) / "eval" if run else f"eval-{Path(models[0].split('@', 1)[0].rstrip('/')).name}"))
    command = "r1zero " + " ".join(shlex.quote(a) for a in args.argv)
    report = eval_run.run_eval(models, config, templates, budgets, out, args.limit, command, not args.no_progress)
    files = "eval.json, eval_samples.jsonl" + (", pass_at_k.png" if "compare" in report else "")
    return f"{eval_run.table(report)}\nwritten to {out}: {files}"


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a whole number") from None


def _disk_full(error: BaseException) -> str | None:
    """What ran out of space, if `error` (or what it was raised from) is a full disk or quota."""
    import errno

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{error.strerror}: {error.filename}" if error.filename else str(error.strerror)
        if "No space left on device" in str(error):
            return "No space left on device"
        error = error.__cause__ or error.__context__
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1zero", description="R1-Zero-style pure RL in JAX")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("score", help="per-token log-probabilities of a text under a model, as JSON")
    p.add_argument("--model", required=True, help="local Hugging Face model directory, or Hub id org/name[@revision]")
    p.add_argument("--text", required=True)
    p.add_argument("--temperature", type=float, default=1.0)
    p.set_defaults(run=_score)

    p = sub.add_parser("sample", help="sample completions of a prompt")
    p.add_argument("--model", required=True, help="local Hugging Face model directory, or Hub id org/name[@revision]")
    p.add_argument("--prompt", required=True)
    p.add_argument("--n", type=int, default=1, help="number of completions")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-prompt-len", type=int, default=1024)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print ids and log-probs as JSON")
    p.set_defaults(run=_sample)

    p = sub.add_parser("train", help="GRPO training run")
    p.add_argument("--config", default=None, help="configs/NAME.py defining get_config(); omit to resume --workdir")
    p.add_argument("--workdir", required=True,
                   help="run directory (metrics, completions, checkpoints, final model); an existing one is resumed")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides the config)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.learning_rate=1e-3 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_train)

    p = sub.add_parser("pretrain", help="next-token pretraining of a small base model on the procedural corpus")
    p.add_argument("--config", required=True, help="configs/NAME.py whose get_config() returns a PretrainConfig")
    p.add_argument("--workdir", required=True, help="run directory; the base model is written to WORKDIR/model")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_pretrain)

    p = sub.add_parser("report", help="summary table and plots of a run, or of several overlaid")
    p.add_argument("--workdir", required=True, help="run directory (metrics.jsonl, completions.jsonl, ...)")
    p.add_argument("--compare", nargs="*", default=[], metavar="DIR", help="more runs to overlay (e.g. controls)")
    p.add_argument("--out", default=None, help="output directory (default: WORKDIR, or WORKDIR/compare with --compare)")
    p.add_argument("--name", action="append", default=[], help="a label per run, in order (default: directory names)")
    p.set_defaults(run=_report)

    p = sub.add_parser("export", help="write a run's checkpoint as a Hugging Face model directory")
    p.add_argument("--workdir", required=True)
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest usable)")
    p.add_argument("--out", required=True, help="output directory (safetensors, config.json, tokenizer)")
    p.set_defaults(run=_export)

    p = sub.add_parser("convert", help="a GGUF file (llama.cpp) as a Hugging Face model directory")
    p.add_argument("--gguf", required=True, help="the .gguf file (a model split in parts: concatenate them first)")
    p.add_argument("--out", required=True, help="output directory (config.json, model.safetensors, tokenizer)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="of the dequantized weights")
    p.set_defaults(run=_convert)

    p = sub.add_parser("eval", help="pass@k, majority voting, best-of-N and budget forcing on held-out problems")
    p.add_argument("--model", default=None, help="model directory, Hub id org/name[@rev], or run directory [@STEP]")
    p.add_argument("--compare", nargs="+", default=None, metavar="MODEL",
                   help="several models on the same problems and samples; the first is the base")
    p.add_argument("--task", default=None, help="dataset (e.g. gsm8k, multiply); default: the run's task")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override e.g. task.difficulty=3")
    p.add_argument("--split", default=None, help="held-out split (default: the task's eval_split)")
    p.add_argument("--limit", type=int, default=None, help="the first N problems")
    p.add_argument("--n", type=int, default=16, help="samples per problem (0: the greedy completion only)")
    p.add_argument("--k", default=None, help="comma-separated k for pass@k and maj@k (default 1,4,16,... up to n)")
    p.add_argument("--template", default=None, help="comma-separated templates to compare (default: the task's)")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--best-of", action="append", default=[], metavar="REWARD",
                   help="rank each problem's samples by this reward (repeatable), e.g. format")
    p.add_argument("--min-think-tokens", default="", help="budget forcing: comma-separated thinking budgets")
    p.add_argument("--max-think-tokens", type=int, default=0, help="close thinking after this many tokens")
    p.add_argument("--extend-with", default=" Wait,", help="what replaces an early </think>")
    p.add_argument("--batch-problems", type=int, default=16, help="problems per sampler call (and per saved chunk)")
    p.add_argument("--no-greedy", action="store_true", help="skip the greedy completion")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None, help="output directory (default: RUN/eval or ./eval-MODEL)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_eval)

    p = sub.add_parser("info", help="a model's architecture and parameter count (JSON), or per run config "
                                    "its parameters and memory per device (a table)")
    p.add_argument("--model", default=None, help="local Hugging Face model directory, or Hub id org/name[@revision]")
    p.add_argument("--config", nargs="+", default=None, metavar="FILE", help="run configs, e.g. configs/recipes/*.py")
    p.add_argument("--devices", type=int, default=8, help="devices the configs' meshes spread over (default 8)")
    p.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the r1zero command: on a CPU, first re-run under an allocator that keeps memory
        from r1zero import hostalloc

        hostalloc.reexec_with_allocator()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command == "train":
        from r1zero import distributed

        distributed.initialize()  # joins a multi-host run described by R1ZERO_* variables, if any
    try:
        result = args.run(args)
    except UserError as e:  # what the user got wrong: one line naming it; anything else keeps its traceback
        print(f"r1zero {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before a run installs its own handlers (set-up, other commands)
        print(f"r1zero {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a full disk surfaces from deep inside orbax or numpy
        full = _disk_full(e)
        if full is None:
            raise
        print(f"r1zero {args.command}: error: the disk is full ({full}); free space and run the same command "
              f"again (checkpoints are only ever replaced by committed ones)", file=sys.stderr)
        return 2
    print(result if isinstance(result, str) else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
