"""Training loop shared by the distillation methods: seeded, progress bar, resumable.

Checkpoints (``TrainingConfig.checkpoint_dir``) are safetensors + JSON, never pickles:

* ``pool.safetensors``: the teacher samples drawn once (same noise for teacher and student);
* ``ckpt_<step>.safetensors``: module weights, optimizer moments and the RNG state;
* ``state.json``: step, loss history, the file name of the latest checkpoint and a
  fingerprint of the run (config + teacher); written last, atomically, so a crash never
  leaves a checkpoint that points to a half-written file.

Resuming a run gives bit-identical weights to an uninterrupted run (same seeds, same order).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._progress import progress_bar
from ..errors import ConfigError
from ..generators.checkpoint import (
    load_module_tensors,
    module_tensors,
    optimizer_tensors,
    read_checkpoint,
    read_info,
    restore_optimizer,
    save_tensors_atomic,
    write_checkpoint,
)
from .config import TrainingConfig

__all__ = ["LossFn", "Trainer", "fingerprint_of", "save_tensors_atomic"]

log = logging.getLogger(__name__)

#: ``loss_fn(batch_indices, generator) -> (loss, {name: float})``
LossFn = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, dict[str, float]]]


def fingerprint_of(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _param_fingerprint(modules: dict[str, nn.Module]) -> list[Any]:
    return [[name, [list(p.shape) for p in m.parameters()]] for name, m in sorted(modules.items())]


class Trainer:
    """Adam with cosine learning-rate decay on the parameters of ``modules``.

    Arguments:
        name: phase name (a checkpoint sub-folder; lets one run hold several phases).
        modules: the trained modules (their state is checkpointed).
        cfg: training options.
        fingerprint: identifies the run; a checkpoint with another fingerprint is refused.
        steps / lr: override ``cfg.steps`` / ``cfg.lr`` for this phase.
        optimize: names of the modules whose parameters this optimizer updates (default: all);
            the others are checkpointed but trained elsewhere (e.g. a critic inside the loss).
    """

    def __init__(
        self,
        name: str,
        modules: dict[str, nn.Module],
        cfg: TrainingConfig,
        fingerprint: str,
        steps: int | None = None,
        lr: float | None = None,
        seed_offset: int = 0,
        optimize: tuple[str, ...] | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
    ) -> None:
        self.name = name
        self.modules = modules
        self.cfg = cfg
        self.steps = int(steps if steps is not None else cfg.steps)
        self.lr = float(lr if lr is not None else cfg.lr)
        self.fingerprint = fingerprint_of(fingerprint, name, _param_fingerprint(modules), self.steps, self.lr)
        names = optimize if optimize is not None else tuple(modules)
        self.params = [p for n in names for p in modules[n].parameters()]
        self.opt = torch.optim.Adam(self.params, lr=self.lr, betas=betas, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(int(cfg.seed) * 1000 + seed_offset + 17)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.dir = Path(cfg.checkpoint_dir) / name if cfg.checkpoint_dir else None

    # -- schedule -----------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        frac = self.cfg.lr_final_fraction
        t = step / max(self.steps - 1, 1)
        return self.lr * (frac + (1 - frac) * 0.5 * (1 + math.cos(math.pi * t)))

    # -- checkpoints ----------------------------------------------------------------------
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for mname, mod in self.modules.items():
            out.update(module_tensors(f"module.{mname}", mod))
        out.update(optimizer_tensors("optim", self.opt)[0])  # Adam: every state entry is a tensor
        out["rng"] = self.gen.get_state()
        return out

    def save(self) -> None:
        if self.dir is None:
            return
        fname = f"ckpt_{self.step:08d}.safetensors"
        old = self._read_state()
        write_checkpoint(
            self.dir, fname, self._state_tensors(), "state.json",
            {"fingerprint": self.fingerprint, "step": self.step, "checkpoint": fname, "history": self.history},
            sort_keys=True,
        )
        if old and old.get("checkpoint") not in (None, fname):
            (self.dir / str(old["checkpoint"])).unlink(missing_ok=True)

    def _read_state(self) -> dict[str, Any] | None:
        return None if self.dir is None else read_info(self.dir, "state.json")

    def try_resume(self) -> bool:
        """Load the latest checkpoint of this phase if there is one; refuse one from another run."""
        state = self._read_state()
        if state is None:
            return False
        assert self.dir is not None
        if state.get("fingerprint") != self.fingerprint:
            msg = (
                f"{self.dir}: checkpoint belongs to a different distillation run (config, teacher or student "
                "changed); use another training.checkpoint_dir or delete it"
            )
            raise ConfigError(
                msg
            )
        _, tensors = read_checkpoint(self.dir, "state.json", str(state["checkpoint"]))
        for mname, mod in self.modules.items():
            load_module_tensors(f"module.{mname}", mod, tensors)
        restore_optimizer("optim", self.opt, tensors)
        self.gen.set_state(tensors["rng"])
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        log.info("resumed %s from step %d (%s)", self.name, self.step, self.dir)
        return True

    # -- loop -------------------------------------------------------------------------------
    def run(self, loss_fn: LossFn, pool_size: int, description: str = "distilling") -> list[dict[str, float]]:
        self.try_resume()
        threads_before = torch.get_num_threads()
        if self.cfg.threads is not None:
            torch.set_num_threads(self.cfg.threads)
        for m in self.modules.values():
            m.train()
        log_every = max(1, self.steps // 50)
        running: dict[str, float] = {}
        try:
            with progress_bar(description, self.steps, enabled=self.cfg.progress) as bar:
                bar.update(completed=self.step)
                while self.step < self.steps:
                    for group in self.opt.param_groups:
                        group["lr"] = self.lr_at(self.step)
                    idx = torch.randint(pool_size, (self.cfg.batch_size,), generator=self.gen)
                    loss, parts = loss_fn(idx, self.gen)
                    if not torch.isfinite(loss):
                        msg = f"{self.name}: non-finite loss at step {self.step}: {parts}"
                        raise FloatingPointError(msg)
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
                    self.opt.step()
                    self.step += 1
                    for k, v in parts.items():
                        running[k] = running.get(k, 0.0) + v
                    running["_n"] = running.get("_n", 0.0) + 1
                    if self.step % log_every == 0 or self.step == self.steps:
                        n = running.pop("_n")
                        rec = {"step": float(self.step), **{k: v / n for k, v in running.items()}}
                        self.history.append(rec)
                        running = {}
                        bar.update(completed=self.step, description=f"{description}  loss {rec.get('loss', float('nan')):.4g}")
                    if self.dir is not None and (self.step % self.cfg.checkpoint_every == 0 or self.step == self.steps):
                        self.save()
        finally:
            torch.set_num_threads(threads_before)
            for m in self.modules.values():
                m.eval()
        return self.history
