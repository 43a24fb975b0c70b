"""Workers that run the GRPO benchmark's work in a peer library's own venv (`python FILE SPEC_JSON`).
They import only that library and `r1zero.bench.grpo_step`'s standard-library helpers."""
