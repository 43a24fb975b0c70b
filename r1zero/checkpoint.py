"""Checkpoints with orbax: asynchronous saves, atomic commits, fallback past a broken newest step.

One step holds everything a run needs to continue exactly as if it had never stopped: the train
state (one pytree: parameters, optimizer state, reference parameters, counters), the train arrays of
a rollout in progress when there is one, and a JSON record (data position, evaluations, the config
and library versions).

Retention: the last `keep` steps plus, optionally, the best one by an evaluation metric (the
record's `end_eval`, the newest evaluation at that step). Old steps are deleted only after a newer
save has committed, and a state that is not finite is never written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from r1zero.errors import UserError

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

    def save(self, step: int, state: Any, rollout: dict | None, meta: dict) -> bool:
        """Starts an asynchronous save of `step`: the `state` pytree, the `rollout` arrays (if any)
        and the JSON `meta`. False (and nothing written) if the state is not finite. Returns once
        the previous save has committed and old steps are pruned."""
        if not all_finite(state):
            log.warning("step %d: the train state is not finite; no checkpoint written", step)
            return False
        self._manager.wait_until_finished()  # the previous step is committed before anything is deleted
        self._prune()
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if rollout is not None:
            items["rollout"] = ocp.args.StandardSave({k: np.asarray(v) for k, v in rollout.items()})
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)
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

    def restore_latest(self, abstract_state: Any, move_aside: bool = True,
                       check_meta: Callable[[dict], None] | None = None) -> tuple[int, Any, dict | None, dict] | None:
        """(step, state, rollout or None, meta) of the newest step that restores, onto the shapes
        and shardings of `abstract_state` (ShapeDtypeStructs with shardings; other leaves, such as
        counters, take the saved values), or None if there is no step.

        Newer steps that do not restore (a missing file, a truncated or unreadable one) are skipped
        with a warning naming them and, once an older step has restored, moved aside to
        `<directory>-unusable/<step>` with the reason (`move_aside`): kept for inspection, but no
        longer in the way of the run saving that step again or of retention. If steps exist but
        none restores, nothing is moved and the error lists what was found. `check_meta(meta)` may
        reject a step's record by raising (e.g. a data position that is not one).
        """
        failures: dict[int, str] = {}
        for step in reversed(self.steps()):
            try:
                items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
                if "rollout" in self._manager.item_metadata(step):
                    items["rollout"] = ocp.args.StandardRestore()
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
                if check_meta is not None:
                    check_meta(dict(restored["meta"]))
            except Exception as e:  # noqa: BLE001 - orbax raises many kinds for damaged files
                failures[step] = self._unusable(step, e)
                continue
            if move_aside:
                for bad, reason in failures.items():
                    self._move_aside(bad, reason)
            rollout = {k: np.asarray(v) for k, v in restored["rollout"].items()} if "rollout" in items else None
            return step, restored["state"], rollout, dict(restored["meta"])
        if failures:
            found = "; ".join(f"step {step}: {reason}" for step, reason in failures.items())
            raise UserError(f"no usable checkpoint in {self.directory}: {found}")
        return None

    def restore_params(self, step: int | None, abstract_params: Any) -> tuple[int, Any]:
        """(step, parameters) of `step`, or of the newest step whose parameters restore (older ones
        are tried after a warning; nothing is moved), onto the given abstract shardings (export)."""
        failures = []
        for candidate in [step] if step is not None else reversed(self.steps()):
            try:
                restored = self._manager.restore(candidate, args=ocp.args.Composite(
                    state=ocp.args.PyTreeRestore(item={"params": abstract_params}, partial_restore=True)))
                return candidate, restored["state"]["params"]
            except Exception as e:  # noqa: BLE001 - as in restore_latest
                failures.append(f"step {candidate}: {self._unusable(candidate, e)}")
        raise UserError(f"no usable checkpoint in {self.directory}: {'; '.join(failures) or 'none saved'}")

    def _unusable(self, step: int, error: Exception) -> str:
        reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}"
        log.warning("checkpoint step %d in %s is unusable (%s); trying an older one", step, self.directory, reason)
        return reason

    def _move_aside(self, step: int, reason: str) -> None:
        """Moves an unusable step out of the checkpoint directory, with a note of why."""
        import shutil

        if jax.process_index() == 0:
            aside = self.directory.parent / f"{self.directory.name}-unusable"
            dest = aside / str(step)
            n = 1
            while dest.exists():
                dest, n = aside / f"{step}.{n}", n + 1
            aside.mkdir(exist_ok=True)
            shutil.move(str(self.directory / str(step)), dest)
            (dest / "UNUSABLE.txt").write_text(f"step {step} could not be restored: {reason}\n")
            log.warning("moved unusable checkpoint step %d to %s", step, dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"r1zero: checkpoint step {step} moved aside")
        self._manager.reload()

    def close(self) -> None:
        self.wait()
        self._manager.close()

