"""Checkpoints with orbax: asynchronous saves, atomic commits, fallback past a broken newest step.

One step holds everything a run needs to continue exactly as if it had never stopped: parameters,
optimizer state, the reference parameters when they differ from the base model, the current
rollout's train arrays and how many of its minibatches are done, and a JSON record (step, data
position, counters, the config and library versions).

Retention: the last `keep` steps plus, optionally, the best one by an evaluation metric. Old steps
are deleted only after a newer save has committed, and a step whose parameters are not finite is
never written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger("r1zero.checkpoint")


def all_finite(tree: Any) -> bool:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return bool(jax.device_get(jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])))) if leaves else True


class Checkpointer:
    def __init__(self, directory: str | Path, keep: int = 3, best_metric: str = "", best_mode: str = "max"):
        self.directory = Path(directory).absolute()
        self.keep, self.best_metric, self.best_mode = keep, best_metric, best_mode
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True, enable_async_checkpointing=True),
            item_names=("state", "rollout", "meta"),
        )

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: dict, rollout: dict, meta: dict) -> bool:
        """Starts an asynchronous save of `step`; False (and nothing written) if the parameters are
        not finite. Returns once the previous save has committed and old steps are pruned."""
        if not all_finite(state["params"]):
            log.warning("step %d: parameters are not finite; no checkpoint written", step)
            return False
        self._manager.wait_until_finished()  # the previous step is committed before anything is deleted
        self._prune()
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            rollout=ocp.args.StandardSave({k: np.asarray(v) for k, v in rollout.items()}),
            meta=ocp.args.JsonSave(meta),
        )
        self._manager.save(step, args=args, force=True)
        return True

    def wait(self) -> None:
        """Blocks until the last save has committed, then prunes old steps."""
        self._manager.wait_until_finished()
        self._prune()

    def _prune(self) -> None:
        steps = self.steps()
        keep = set(steps[-self.keep:]) if self.keep > 0 else set(steps)
        best = self._best_step(steps)
        if best is not None:
            keep.add(best)
        for s in steps:
            if s not in keep:
                self._manager.delete(s)

    def _best_step(self, steps: list[int]) -> int | None:
        if not self.best_metric:
            return None
        scored = []
        for s in steps:
            try:
                value = self.read_meta(s).get("end_eval", {}).get(self.best_metric)
            except Exception:  # noqa: BLE001 - an unreadable step is not the best one
                continue
            if value is not None:
                scored.append((value if self.best_mode == "max" else -value, s))
        return max(scored)[1] if scored else None

    def read_meta(self, step: int) -> dict:
        return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def restore_latest(self, abstract_state: dict) -> tuple[int, dict, dict, dict] | None:
        """(step, state, rollout, meta) of the newest step that restores, onto the shardings of
        `abstract_state` (a tree of ShapeDtypeStructs with shardings), or None if there is none.

        A newest step that is missing a file, truncated or unreadable is skipped with a warning
        naming it; if steps exist but none restores, the error lists what was found.
        """
        steps = self.steps()
        failures = []
        for step in reversed(steps):
            try:
                meta = self.read_meta(step)
                target = dict(abstract_state)
                if meta.get("ref_is_base", True):
                    target.pop("ref_params", None)
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target),
                    rollout=ocp.args.StandardRestore(),
                    meta=ocp.args.JsonRestore(),
                ))
            except Exception as e:  # noqa: BLE001 - orbax raises many kinds for damaged files
                log.warning("checkpoint step %d in %s is unusable (%s: %s); trying an older one",
                            step, self.directory, type(e).__name__, str(e)[:200])
                failures.append(f"step {step}: {type(e).__name__}")
                continue
            rollout = {k: np.asarray(v) for k, v in restored["rollout"].items()}
            return step, dict(restored["state"]), rollout, dict(restored["meta"])
        if steps:
            raise RuntimeError(f"no usable checkpoint in {self.directory}: {'; '.join(failures)}")
        return None

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Only the parameters of `step` (for export), onto the given abstract shardings."""
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item={"params": abstract_params}, partial_restore=True)))
        return restored["state"]["params"]

    def close(self) -> None:
        self.wait()
        self._manager.close()

