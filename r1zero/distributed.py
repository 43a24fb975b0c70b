"""Multi-host start-up: JAX's own multi-controller runtime (`jax.distributed`), nothing home-made."""

from __future__ import annotations

import os


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Joins a multi-process run when one is described (arguments, or R1ZERO_COORDINATOR,
    R1ZERO_NUM_PROCESSES, R1ZERO_PROCESS_ID; on TPU pods and SLURM clusters jax finds them itself
    when R1ZERO_DISTRIBUTED=auto). Returns whether it did. Must run before any other JAX call."""
    import jax

    coordinator = coordinator or os.environ.get("R1ZERO_COORDINATOR")
    num_processes = num_processes or _int(os.environ.get("R1ZERO_NUM_PROCESSES"))
    process_id = process_id if process_id is not None else _int(os.environ.get("R1ZERO_PROCESS_ID"))
    if coordinator is None and os.environ.get("R1ZERO_DISTRIBUTED") != "auto":
        return False
    # CPU processes exchange data over gloo (this setting touches nothing on GPU or TPU). No JAX call
    # may come before initialize(), not even asking for the backend.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    return True


def _int(value: str | None) -> int | None:
    return int(value) if value else None
