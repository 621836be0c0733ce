"""A compression pipeline: steps (method configs) run in order, with optional
fine-tuning between them and an injected fidelity gate after each.

Recipe YAML (``configs/compress/*.yaml``)::

    name: combined
    description: prune + low rank + QAT
    on_failure: rollback          # or "stop": what a failed gate does
    gate_at: every                # or "last": gate only the final model (a chain whose
                                  # intermediate models are not deliverables, e.g. distil -> fixed point)
    finetune: {steps: 100, lr: 1.0e-4}   # default fine-tuning after every step (optional)
    steps:
      - {method: magnitude_prune, sparsity: 0.5}
      - {method: svd, energy: 0.95, finetune: {steps: 200, lr: 5.0e-5}}   # per-step override
      - {method: qat, steps: 200, weights: {bits: 8}}

Errors raised inside a step carry a PEP 678 note naming the step, e.g.
``while running step 2/3 'svd' (configs/compress/combined.yaml)``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field
from torch import nn

from .._config import StrictModel, parse_config, read_yaml_mapping
from ..errors import BundleError, ConfigError
from .base import CompressionResult, Gate, GateResult, MethodConfig, compress, config_from_dict
from .parametrizations import clone_model

__all__ = [
    "FinetuneSpec",
    "Pipeline",
    "PipelineResult",
    "Recipe",
    "Step",
    "StepOutcome",
    "load_recipe",
]

log = logging.getLogger(__name__)


class FinetuneSpec(StrictModel):
    """Fine-tuning after a step: ``steps`` optimizer steps at learning rate ``lr``."""

    steps: int = Field(0, ge=0)
    lr: float = Field(1e-4, gt=0)


class Recipe(StrictModel):
    """A named pipeline recipe (see the module docstring)."""

    name: str = ""
    description: str = ""
    on_failure: Literal["stop", "rollback"] = "stop"
    gate_at: Literal["every", "last"] = Field(
        "every", description="every: gate after each step; last: only the final model (needs on_failure: stop)")
    finetune: FinetuneSpec | None = None
    steps: list[dict[str, Any]]


@dataclass(frozen=True)
class Step:
    config: MethodConfig
    finetune: FinetuneSpec | None = None


@dataclass
class StepOutcome:
    """What happened at one step."""

    index: int
    config: MethodConfig
    result: CompressionResult | None
    finetune: FinetuneSpec | None
    gate: GateResult | None
    rolled_back: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "method": self.config.method,
            "config": self.config.to_dict(),
            "finetune": self.finetune.model_dump() if self.finetune else None,
            "gate": None if self.gate is None else {"passed": self.gate.passed, "summary": self.gate.summary, "metrics": self.gate.metrics},
            "rolled_back": self.rolled_back,
            "seconds": self.seconds,
            "layers": [r.to_dict() for r in self.result.layers] if self.result else [],
            "extra": dict(self.result.extra) if self.result else {},
        }


@dataclass
class PipelineResult:
    """Final model, per-step outcomes and whether every kept step passed the gate."""

    model: nn.Module
    steps: list[StepOutcome] = field(default_factory=list)
    passed: bool = True
    stopped_at: int | None = None
    recipe: dict[str, Any] = field(default_factory=dict)

    @property
    def applied(self) -> list[StepOutcome]:
        """Steps whose result is in the final model."""
        return [s for s in self.steps if not s.rolled_back]

    def base_and_steps(self, original_config: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The config to rebuild the final architecture from, and the step configs applied on top.

        A step whose result replaces the architecture (distillation: ``extra["replaces_model"]``)
        makes its ``extra["base_config"]`` the new base.
        """
        base: dict[str, Any] = original_config
        steps: list[dict[str, Any]] = []
        for s in self.applied:
            extra = s.result.extra if s.result is not None else {}
            if extra.get("replaces_model"):
                new_base = extra.get("base_config")
                config_dict = getattr(s.result.model, "config_dict", None) if s.result is not None else None
                if new_base is None and callable(config_dict):
                    new_base = config_dict()  # the new architecture rebuilds from its own config
                if not isinstance(new_base, dict):
                    msg = (
                        f"step {s.index} {s.config.method!r} replaced the model but left no base_config "
                        "(extra['base_config'] or a model with config_dict()) to rebuild it from"
                    )
                    raise BundleError(
                        msg
                    )
                base, steps = dict(new_base), []
            steps.append(s.config.to_dict())
        return base, steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "stopped_at": self.stopped_at,
            "recipe": self.recipe,
            "steps": [s.to_dict() for s in self.steps],
        }


Finetune = Callable[[nn.Module, int, float], Any]


def _as_step(item: Step | MethodConfig | dict[str, Any], source: str) -> Step:
    if isinstance(item, Step):
        return item
    if isinstance(item, MethodConfig):
        return Step(item)
    if isinstance(item, dict):
        body = dict(item)
        ft = body.pop("finetune", None)
        spec = parse_config(FinetuneSpec, ft, source=f"{source}.finetune") if ft is not None else None
        return Step(config_from_dict(body, source=source), spec)
    msg = f"{source}: a step must be a mapping with a 'method' key, got {type(item).__name__}"
    raise ConfigError(msg)


class Pipeline:
    """Run compression steps in order on a copy of a model.

    Args:
        steps: method configs, :class:`Step` objects or ``{"method": ..., ...}`` mappings.
        gate: callable ``(model) -> GateResult`` evaluated after each step (and its fine-tuning).
        finetune: callable ``(model, steps, lr)`` used for fine-tuning between steps and as
            the ``trainer=`` of methods that train (QAT, gradual pruning, LoRA).
        on_failure: ``"stop"`` ends the pipeline at the first failed gate (the result
            holds the failing model, ``passed=False``); ``"rollback"`` discards the failed
            step and continues from the model before it.
        gate_at: ``"every"`` gates after each step; ``"last"`` only after the final step
            (for chains whose intermediate models are not deliverables, e.g. a float student
            that the next step quantizes; needs ``on_failure="stop"``).
        default_finetune: fine-tuning applied after steps that do not set their own.
        source: where the steps came from (for error notes).
    """

    def __init__(
        self,
        steps: Sequence[Step | MethodConfig | dict[str, Any]],
        gate: Gate | None = None,
        finetune: Finetune | None = None,
        *,
        on_failure: Literal["stop", "rollback"] = "stop",
        gate_at: Literal["every", "last"] = "every",
        default_finetune: FinetuneSpec | None = None,
        source: str = "<pipeline>",
        name: str = "",
    ) -> None:
        if on_failure not in ("stop", "rollback"):
            msg = f"{source}: on_failure must be 'stop' or 'rollback', got {on_failure!r}"
            raise ConfigError(msg)
        if gate_at not in ("every", "last"):
            msg = f"{source}: gate_at must be 'every' or 'last', got {gate_at!r}"
            raise ConfigError(msg)
        if gate_at == "last" and on_failure == "rollback":
            msg = f"{source}: gate_at 'last' needs on_failure 'stop' (a rollback would return a model no gate has seen)"
            raise ConfigError(msg)
        self.steps = [_as_step(s, f"{source}: steps[{i}]") for i, s in enumerate(steps)]
        if not self.steps:
            msg = f"{source}: a pipeline needs at least one step"
            raise ConfigError(msg)
        self.gate = gate
        self.finetune = finetune
        self.on_failure = on_failure
        self.gate_at = gate_at
        self.default_finetune = default_finetune
        self.source = source
        self.name = name

    @classmethod
    def from_recipe(cls, recipe: Recipe, gate: Gate | None = None, finetune: Finetune | None = None, source: str = "<recipe>") -> Pipeline:
        return cls(recipe.steps, gate, finetune, on_failure=recipe.on_failure, gate_at=recipe.gate_at, default_finetune=recipe.finetune, source=source, name=recipe.name)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], gate: Gate | None = None, finetune: Finetune | None = None) -> Pipeline:
        return cls.from_recipe(load_recipe(path), gate, finetune, source=str(path))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "on_failure": self.on_failure,
            "gate_at": self.gate_at,
            "finetune": self.default_finetune.model_dump() if self.default_finetune else None,
            "steps": [{**s.config.to_dict(), **({"finetune": s.finetune.model_dump()} if s.finetune else {})} for s in self.steps],
        }

    def run(self, model: nn.Module, **kwargs: Any) -> PipelineResult:
        """Run every step on a copy of ``model`` (never mutated). ``kwargs`` go to every method
        (e.g. ``calibration=``); ``trainer=`` defaults to this pipeline's ``finetune``."""
        if self.finetune is not None:
            kwargs.setdefault("trainer", self.finetune)
        current = clone_model(model)
        out = PipelineResult(current, recipe=self.describe())
        n = len(self.steps)
        for i, step in enumerate(self.steps, start=1):
            note = f"while running step {i}/{n} {step.config.method!r} ({self.source})"
            t0 = time.perf_counter()
            log.info("compress: %s", note[6:])
            try:
                result = compress(current, step.config, **kwargs)
                ft = step.finetune or self.default_finetune
                if ft is not None and ft.steps > 0:
                    if self.finetune is None:
                        msg = f"{self.source}: step {i} asks for fine-tuning but no finetune callable was given"
                        raise ConfigError(msg)
                    self.finetune(result.model, ft.steps, ft.lr)
                gated = self.gate_at == "every" or i == n
                gate_result = self.gate(result.model) if self.gate is not None and gated else None
            except Exception as err:
                _add_note(err, note)
                raise
            outcome = StepOutcome(i, step.config, result, ft, gate_result, seconds=time.perf_counter() - t0)
            out.steps.append(outcome)
            if gate_result is not None and not gate_result.passed:
                if self.on_failure == "rollback":
                    outcome.rolled_back = True
                    log.warning("compress: step %d/%d %r failed the gate (%s); rolled back", i, n, step.config.method, gate_result.summary)
                    continue
                out.passed = False
                out.stopped_at = i
                out.model = result.model
                log.warning("compress: step %d/%d %r failed the gate (%s); stopping", i, n, step.config.method, gate_result.summary)
                return out
            current = result.model
        out.model = current
        return out


def _add_note(err: BaseException, note: str) -> None:
    """PEP 678 note (Python >= 3.11 shows it with the traceback; 3.10 keeps it in ``__notes__``)."""
    if sys.version_info >= (3, 11):
        err.add_note(note)
    else:
        err.__notes__ = [*getattr(err, "__notes__", []), note]  # type: ignore[attr-defined]  # not in 3.10 stubs


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a recipe YAML, checking every step's method config."""
    recipe = parse_config(Recipe, read_yaml_mapping(path), source=str(path))
    for i, s in enumerate(recipe.steps):
        _as_step(s, f"{path}: steps[{i}]")
    return recipe
