"""TRL GRPOTrainer (transformers `generate`, no vLLM) on the benchmark's work; run by
`r1zero.bench.grpo_step` with the TRL venv's python: `python trl_grpo.py SPEC_JSON`.

P prompts x G (per_device_train_batch_size = P * G, num_generations = G), max_completion_length =
the budget; fixed lengths: min_new_tokens = the budget (EOS suppressed, every row runs it all);
realistic: EOS ends a row. Temperature 1, top_k 0, top_p 1, beta 0, one optimizer step per
generation (steps_per_generation = gradient_accumulation_steps = 1, num_iterations 1), loss "grpo",
float32 on CPU (bf16 on a GPU), no gradient checkpointing, reward = characters / 64.
A step ends at `on_step_end`; generation is the policy's `generate` call; log-probs are
`_get_per_token_logps_and_entropies` calls outside the loss (none here); the update is the rest of
the step after generation and scoring returned (`training_step` minus generate-and-score).
"""
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # r1zero.bench.grpo_step: stdlib only at import
from r1zero.bench.grpo_step import finish  # noqa: E402


def main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    gpu = torch.cuda.is_available()
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.bfloat16 if gpu else torch.float32)
    marks = {"gen": [], "tokens": [], "logprob": [], "update": [], "update_end": [], "t0": time.perf_counter()}
    orig_generate = model.generate

    def timed_generate(*a, **k):
        if gpu:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = orig_generate(*a, **k)
        if gpu:
            torch.cuda.synchronize()
        marks["gen"].append(time.perf_counter() - t)
        return out

    model.generate = timed_generate

    def reward(completions, completion_ids=None, **kw):
        marks["tokens"].append(sum(len(c) for c in completion_ids) if completion_ids is not None else 0)
        return [len(c) / 64.0 for c in completions]

    P, G, N = spec["prompts"], spec["G"], spec["max_new"]
    ds = Dataset.from_dict({"prompt": spec["prompt_texts"]})
    gen_kwargs = {} if spec["eos"] else {"min_new_tokens": N}
    with tempfile.TemporaryDirectory(prefix="trl-bench-") as tmp:
        args = GRPOConfig(
            output_dir=tmp, per_device_train_batch_size=P * G, num_generations=G, max_completion_length=N,
            max_steps=spec["steps"], learning_rate=1e-6, logging_steps=1, report_to=[], save_strategy="no",
            bf16=gpu, fp16=False, use_cpu=not gpu, temperature=1.0, top_p=1.0, top_k=0, beta=spec.get("beta", 0.0),
            gradient_checkpointing=False, seed=0, loss_type="grpo", num_iterations=1,
            generation_kwargs=gen_kwargs, disable_tqdm=True, log_completions=False, dataloader_num_workers=0)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok)
        score = trainer._generate_and_score_completions
        logps = trainer._get_per_token_logps_and_entropies
        in_score = [False]
        scored_at = [0.0]

        def timed_score(*a, **k):
            in_score[0] = True
            try:
                return score(*a, **k)
            finally:
                in_score[0] = False
                scored_at[0] = time.perf_counter()

        def timed_logps(*a, **k):
            t = time.perf_counter()
            out = logps(*a, **k)
            if in_score[0]:
                marks["logprob"].append(time.perf_counter() - t)
            return out

        trainer._generate_and_score_completions, trainer._get_per_token_logps_and_entropies = timed_score, timed_logps

        class Timer(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if gpu:
                    torch.cuda.synchronize()
                now = time.perf_counter()
                marks["update"].append(now - scored_at[0])
                marks["update_end"].append(now)

        trainer.add_callback(Timer())
        trainer.train()
    print(json.dumps(finish(spec, marks, "trl", {"trl": trl.__version__, "transformers": transformers.__version__,
                                                  "torch": torch.__version__})), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
