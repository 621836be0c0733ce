"""Classifier two-sample test (CaloChallenge ``cls-low`` / ``cls-high``), the only torch module here.

A fully connected network (Linear -> LeakyReLU blocks, BCEWithLogits, Adam) learns to tell
reference from candidate. The two samples are balanced, split train / test / held-out (60/20/20
by default); the best epoch is chosen by test accuracy, the output is calibrated by isotonic
regression on the test split (as CaloChallenge does), and AUC and JSD = (ln 2 - BCE) / ln 2 are
reported on the held-out split. AUC 0.5 means the network cannot tell the samples apart. Fully
seeded: the same inputs, seed and thread count give the same numbers.

Two presets (:data:`~.spec.CLASSIFIER_PRESETS`, docs/classifier.md): ``calochallenge`` is
CaloChallenge 2022's DNN at full strength (three Linear(2048) -> LeakyReLU blocks, 50 epochs, Adam
2e-4, batches of 1000, every core); ``gate`` (2 x 256, 20 epochs, one thread) is the cheap preset
of the compression gate, labelled as such in the report: a weaker classifier reports a lower AUC
than the truth. Every result carries the settings it was trained with (:attr:`ClassifierResult.settings`).

Inputs (see :func:`low_level_inputs`, :func:`simcompress.validation.features.high_level_vector`):
``low`` = ``[log10 E_inc, voxels / E_inc]``; ``high`` = the CaloChallenge high-level vector, both
exactly CaloChallenge's ``evaluate.py`` inputs; the ``gate`` preset also standardises them.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> r = classifier_test(rng.normal(size=(400, 3)), rng.normal(size=(400, 3)) + 2.0, epochs=3, n_hidden=8)
>>> r.auc > 0.9, r.settings["preset"], r.settings["calibration"]
(True, 'gate (modified: epochs=3, n_hidden=8)', 'isotonic regression on the test split')
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._progress import progress_bar
from ..errors import ConfigError
from ._shared import TooFewEventsError
from .feature_kernel import busy_core, spare_core
from .spec import CLASSIFIER_PRESET_LABELS, classifier_preset

if TYPE_CHECKING:  # pragma: no cover
    from .spec import ClassifierRule

__all__ = [
    "ClassifierResult",
    "FittedClassifier",
    "classifier_test",
    "fit_classifier",
    "isotonic_calibrate",
    "isotonic_fit",
    "low_level_inputs",
    "roc_auc",
    "run_classifier",
    "settings_html",
    "settings_lines",
]

#: CaloChallenge's IsotonicRegression(out_of_bounds='clip', y_min=1e-6, y_max=1 - 1e-6)
CALIBRATION_CLIP = 1e-6


@dataclass(frozen=True)
class ClassifierResult:
    """Held-out AUC and JSD, with the split sizes, the chosen epoch and the training settings."""

    auc: float
    jsd: float
    bce: float
    n_train: int
    n_test: int
    n_heldout: int
    best_epoch: int  # 0-based; settings["selected_epoch"] is 1-based, as CaloChallenge prints it
    calibrated: bool
    #: test-split accuracy after each epoch run (the selection criterion)
    test_accuracy: tuple[float, ...] = ()
    #: preset, architecture, epochs, selected epoch, calibration, split sizes, seed, threads
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["test_accuracy"] = list(self.test_accuracy)
        return d


def low_level_inputs(incident_energy: np.ndarray, showers: np.ndarray) -> np.ndarray:
    """CaloChallenge ``cls-low`` input: ``[log10 E_inc, voxel / E_inc]`` (float32)."""
    e = np.asarray(incident_energy, dtype=np.float64).reshape(-1, 1)
    return np.concatenate([np.log10(e), np.asarray(showers, dtype=np.float64) / e], axis=1).astype(np.float32)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        msg = "AUC needs both classes in the evaluation split"
        raise TooFewEventsError(msg)
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def isotonic_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic (non-decreasing) least-squares fit (scikit-learn's ``IsotonicRegression``).

    Returns ``(x_knots, y_knots)`` for :func:`numpy.interp` (constant extrapolation), the
    fitted model's ``X_thresholds_`` and ``y_thresholds_``.
    """
    from sklearn.isotonic import IsotonicRegression

    ir = IsotonicRegression(out_of_bounds="clip").fit(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.asarray(ir.X_thresholds_, dtype=np.float64), np.asarray(ir.y_thresholds_, dtype=np.float64)


def isotonic_calibrate(p_fit: np.ndarray, y_fit: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Calibrate probabilities ``p`` by the isotonic fit of ``y_fit`` on ``p_fit`` (CaloChallenge's calibration).

    ``IsotonicRegression(out_of_bounds='clip', y_min=1e-6, y_max=1 - 1e-6)``, as in ``evaluate.py``:
    linear between the knots, constant outside, bounded to [1e-6, 1 - 1e-6].
    """
    from sklearn.isotonic import IsotonicRegression

    ir = IsotonicRegression(out_of_bounds="clip", y_min=CALIBRATION_CLIP, y_max=1.0 - CALIBRATION_CLIP)
    ir.fit(np.asarray(p_fit, dtype=np.float64), np.asarray(y_fit, dtype=np.float64))
    return np.asarray(ir.predict(np.asarray(p, dtype=np.float64)), dtype=np.float64)


def _net(n_in: int, n_hidden: int, n_layers: int, dropout: float) -> Any:
    from torch import nn

    layers: list[Any] = []
    d = n_in
    for _ in range(n_layers):
        layers += [nn.Linear(d, n_hidden), nn.LeakyReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = n_hidden
    layers.append(nn.Linear(d, 1))
    return nn.Sequential(*layers)


def _all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class FittedClassifier:
    """A trained classifier's outputs on its test and held-out splits (before calibration).

    ``p_test`` / ``p_heldout``: sigmoid outputs of the network at the selected epoch;
    ``y_test`` / ``y_heldout``: the labels (0 reference, 1 candidate). :meth:`result` calibrates and scores.
    """

    p_test: np.ndarray
    y_test: np.ndarray
    p_heldout: np.ndarray
    y_heldout: np.ndarray
    n_train: int
    best_epoch: int
    test_accuracy: tuple[float, ...]
    settings: dict[str, Any]

    def result(self) -> ClassifierResult:
        """Held-out AUC, BCE and JSD (after isotonic calibration on the test split when the settings say so)."""
        calibrate = bool(self.settings["calibrate"])
        p = isotonic_calibrate(self.p_test, self.y_test, self.p_heldout) if calibrate else self.p_heldout
        y = self.y_heldout
        auc = roc_auc(y, p)
        pc = np.clip(p, CALIBRATION_CLIP, 1 - CALIBRATION_CLIP)
        bce = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
        jsd = (math.log(2.0) - bce) / math.log(2.0)
        return ClassifierResult(auc, jsd, bce, self.n_train, int(self.y_test.size), int(y.size), self.best_epoch,
                                calibrate, self.test_accuracy, dict(self.settings))


def _resolve(preset: str, overrides: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(settings, preset as reported): a setting that differs from the preset's is named in the report."""
    cfg: dict[str, Any] = classifier_preset(preset)
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        msg = f"classifier: unknown setting {unknown[0]!r}; allowed: {', '.join(sorted(cfg))}"
        raise ConfigError(msg)
    given = {k: v for k, v in overrides.items() if v is not None}
    changed = [f"{k}={v}" for k, v in sorted(given.items()) if v != cfg[k]]
    cfg.update(given)
    return cfg, preset + (f" (modified: {', '.join(changed)})" if changed else "")


def classifier_test(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    preset: str = "gate",
    n_hidden: int | None = None,
    n_layers: int | None = None,
    dropout: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    calibrate: bool | None = None,
    standardize: bool | None = None,
    threads: int | None = None,
    precision: str | None = None,
    patience: int | None = None,
    max_events: int | None = None,
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    min_events: int = 100,
    seed: int = 0,
    progress: bool = False,
    on_epoch: Callable[[int, int, float], None] | None = None,
    label: str = "",
) -> ClassifierResult:
    """Train a classifier to separate ``reference`` rows from ``candidate`` rows; report held-out AUC/JSD.

    Args:
        reference, candidate: (N, D) input arrays (see module docstring).
        preset: ``"gate"`` (cheap, default) or ``"calochallenge"``; each setting left ``None``
            below is the preset's (:data:`~.spec.CLASSIFIER_PRESETS`).
        n_layers: number of Linear -> LeakyReLU blocks of ``n_hidden`` units before the output layer.
        batch_size: training batch size; ``None`` picks min(1000, max(32, n_train // 20)) so small
            samples still get enough optimiser steps per epoch (CaloChallenge uses 1000).
        max_events: cap per class (random subsample) to bound training time.
        min_events: refuse (``TooFewEventsError``) with fewer events per class.
        standardize: scale inputs by the training split's mean and std (fitted on training data only).
        threads: torch intra-op threads while training (restored afterwards); 0: every core.
        precision: ``"float32"`` or ``"bfloat16"``: the matrix products of training and prediction in
            bfloat16 (``torch.autocast``; weights, Adam and the loss stay float32).
        patience: stop once this many epochs in a row brought no better test accuracy; 0 runs every
            epoch (``None``: the preset's; both presets run every epoch, as ``evaluate.py``). The
            selected epoch is the best of those run, so a stopped run equals the same run with
            ``epochs`` set to the epochs it ran.
        seed: seeds the subsampling, split, initialisation and batch order.
        progress: show a bar over the epochs (not inside another live bar: use ``on_epoch`` there).
        on_epoch: called as ``on_epoch(epoch, epochs, test_accuracy)`` after each epoch (1-based).
    """
    return fit_classifier(
        reference, candidate, preset=preset, n_hidden=n_hidden, n_layers=n_layers, dropout=dropout, epochs=epochs,
        batch_size=batch_size, lr=lr, calibrate=calibrate, standardize=standardize, threads=threads,
        precision=precision, patience=patience, max_events=max_events, split=split, min_events=min_events, seed=seed,
        progress=progress, on_epoch=on_epoch, label=label,
    ).result()


def run_classifier(rule: ClassifierRule, x: np.ndarray, y: np.ndarray, *, seed: int, label: str = "",
                   progress: bool = False, on_epoch: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """The classifier test of a gate spec's ``classifier`` rule (its preset and settings), as a JSON-able dict."""
    return classifier_test(
        x, y, preset=rule.preset, n_hidden=rule.n_hidden, n_layers=rule.n_layers, dropout=rule.dropout,
        epochs=rule.epochs, batch_size=rule.batch_size, lr=rule.lr, calibrate=rule.calibrate,
        standardize=rule.standardize, threads=rule.threads, precision=rule.precision, patience=rule.patience,
        max_events=rule.max_events, min_events=rule.min_events,
        seed=seed, label=label, progress=progress, on_epoch=on_epoch,
    ).to_dict()


def fit_classifier(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    preset: str = "gate",
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    min_events: int = 100,
    seed: int = 0,
    progress: bool = False,
    on_epoch: Callable[[int, int, float], None] | None = None,
    label: str = "",
    **overrides: Any,
) -> FittedClassifier:
    """Train as :func:`classifier_test` and return the network's outputs on the test and held-out splits."""
    import torch

    cfg, shown = _resolve(preset, overrides)
    threads = int(cfg["threads"]) or _all_cores()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _fit(reference, candidate, cfg, preset=shown, threads=threads, split=split, min_events=min_events,
                    seed=seed, progress=progress, on_epoch=on_epoch, label=label)
    finally:
        torch.set_num_threads(old_threads)


def _prepare(reference: np.ndarray, candidate: np.ndarray, split: tuple[float, float, float], max_events: int | None,
             min_events: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    a = np.asarray(reference, dtype=np.float32)
    b = np.asarray(candidate, dtype=np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        msg = f"classifier test: inputs must be 2-D with equal widths, got {a.shape} and {b.shape}"
        raise ConfigError(msg)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        msg = "classifier test: NaN or infinite inputs"
        raise ConfigError(msg)
    if len(split) != 3 or min(split) <= 0 or abs(sum(split) - 1.0) > 1e-6:
        msg = f"classifier test: split must be three positive fractions summing to 1, got {split}"
        raise ConfigError(msg)
    n = min(a.shape[0], b.shape[0])
    if max_events is not None:
        n = min(n, int(max_events))
    if n < min_events:
        msg = f"classifier test: {n} events per class after balancing, need at least {min_events}"
        raise TooFewEventsError(msg)
    a = a[rng.permutation(a.shape[0])[:n]]
    b = b[rng.permutation(b.shape[0])[:n]]
    n_tr = round(split[0] * n)
    n_te = round(split[1] * n)
    parts = []
    for lo, hi in ((0, n_tr), (n_tr, n_tr + n_te), (n_tr + n_te, n)):
        x = np.concatenate([a[lo:hi], b[lo:hi]])
        y = np.concatenate([np.zeros(hi - lo, np.float32), np.ones(hi - lo, np.float32)])
        parts.append((x, y))
    return parts


def _predict(net: Any, x: Any, chunk: int = 8192) -> np.ndarray:
    """Sigmoid outputs in chunks (bounded memory for 2048-wide layers)."""
    import torch

    with torch.no_grad():
        out = [torch.sigmoid(net(x[i : i + chunk]).float().squeeze(1)) for i in range(0, x.shape[0], chunk)]
    return torch.cat(out).numpy().astype(np.float64)


#: LeakyReLU's default negative slope (the ``nn.LeakyReLU()`` of :func:`_net`)
_SLOPE = 0.01
#: rows (and output units) are split at multiples of this (twice the floats of the widest vector, AVX-512): every
#: element then takes the same path (vectorised or scalar tail) through torch's elementwise kernels as in one call
#: over the whole tensor
_ALIGN = 32
#: precisions of the classifier's matrix products (``precision`` setting)
_PRECISIONS = ("float32", "bfloat16")
#: train the dropout-free network with :class:`_HandSteps` (False: the plain autograd loop, kept for dropout > 0
#: and as the reference the tests compare with)
_HAND_STEPS = True


def _cut(n: int) -> int:
    """Where ``n`` rows (or output units) are split into two parts: a multiple of 32 near n / 2; 0 below 64."""
    return (n // 2) // _ALIGN * _ALIGN if n >= 2 * _ALIGN else 0


def _flat(params: list[Any]) -> list[Any]:
    """``params`` as one flat parameter for Adam (one set of operations a step, not one per tensor), where exact.

    The tensors become views of one buffer and their gradients views of one gradient buffer (the
    hand steps write into them). torch's elementwise kernels run the last ``numel % 32`` elements of a
    tensor (AVX2: % 16) through a scalar loop, which may round differently from the vector loop
    (``lerp``, ``addcmul``, ``addcdiv``); so this is done only when every tensor but the last holds a
    multiple of 64 elements: each element then takes the path it takes alone, and the updates are
    bitwise those of one ``Adam`` over the separate tensors (with one torch thread, no parallel chunks).
    Otherwise ``params`` are returned as they are.
    """
    import torch

    if len(params) < 2 or any(p.numel() % 64 for p in params[:-1]):
        return params
    n = sum(p.numel() for p in params)
    data, grad = torch.empty(n), torch.empty(n)
    at = 0
    for p in params:
        k = p.numel()
        data[at : at + k].copy_(p.detach().reshape(-1))
        view, gview = data[at : at + k].view_as(p), grad[at : at + k].view_as(p)
        p.data = view
        p.grad = gview
        at += k
    flat = torch.nn.Parameter(data)
    flat.grad = grad
    return [flat]


class _HandSteps:
    """Adam steps and predictions of :func:`_net`'s network without dropout, computed by hand, in two fixed parts.

    The forward pass, the gradient of ``BCEWithLogitsLoss`` (mean) and the backward pass call the
    operations autograd calls for ``Linear -> LeakyReLU -> ... -> Linear``: ``addmm(b, a, W.t())``,
    ``leaky_relu``, ``(sigmoid(z) - y) / n``, ``leaky_relu_backward``, ``grad.mm(W)`` for a layer's
    input, ``grad.t().mm(a)`` and ``grad.sum(0)`` for its weight and bias; the update is torch's own
    ``Adam``. No graph is built and the buffers are reused from step to step.

    With ``pool`` (a one-thread executor; used when torch runs on one intra-op thread) every step is
    computed in two fixed parts: the batch's rows (two halves, cut at a multiple of 32 rows) for the
    forward pass, the loss gradient and the chain of input gradients, which are independent per row;
    the output units of each weight gradient (two halves). Adam runs on this thread, over the
    parameters as one flat tensor where :func:`_flat` finds that exact (each element's update is its
    own). The second part goes to the helper thread while
    a core is spare (:func:`~.feature_kernel.spare_core`), otherwise, or when the helper has not
    started it by the time the first part is done, this thread computes it: the parts are fixed, so
    which thread runs one, and when, changes no number. On the project's machine (torch 2.13, MKL)
    the parts give bitwise the numbers of one call over the whole batch, and the parameters after
    every step are bitwise those of the autograd loop (tests compare them).

    ``bf16=True`` (``precision: bfloat16``) computes what the autograd loop under
    ``torch.autocast("cpu", bfloat16)`` computes: each step casts the float32 weights, biases and the
    batch to bfloat16 once, the products, LeakyReLU and the backward chain run in bfloat16, the loss
    gradient ``(sigmoid(z) - y) / n`` in float32 on the float32 logits, and the bfloat16 weight and
    bias gradients are cast to float32 for Adam on the float32 weights (autocast's cast backward).
    """

    def __init__(self, net: Any, lr: float, batch_size: int, pool: Any, *, bf16: bool = False) -> None:
        import torch

        self.lin = [m for m in net if isinstance(m, torch.nn.Linear)]
        self.pool = pool
        self.bf16 = bf16
        dt = torch.bfloat16 if bf16 else torch.float32
        cap = int(batch_size)
        widths = [int(m.weight.shape[0]) for m in self.lin]
        # per-step buffers (a batch uses its first n rows): pre-activations, activations, their gradients
        self.z = [torch.empty(cap, w, dtype=dt) for w in widths[:-1]]
        self.act = [torch.empty(cap, w, dtype=dt) for w in widths[:-1]]
        self.gz = [torch.empty(cap, w, dtype=dt) for w in widths]
        # bfloat16: the step's casts of the weights, biases and batch, and the bfloat16 gradients before their cast
        self.w16 = [torch.empty_like(m.weight, dtype=dt) for m in self.lin] if bf16 else []
        self.b16 = [torch.empty_like(m.bias, dtype=dt) for m in self.lin] if bf16 else []
        self.x16 = torch.empty(cap, int(self.lin[0].weight.shape[1]), dtype=dt) if bf16 else None
        self.gw16 = [torch.empty_like(m.weight, dtype=dt) for m in self.lin] if bf16 else []
        self.gb16 = [torch.empty_like(m.bias, dtype=dt) for m in self.lin] if bf16 else []
        params = [p for m in self.lin for p in (m.weight, m.bias)]
        for p in params:
            p.grad = torch.empty_like(p)  # the steps write the gradients into these (views of a flat one, below)
        if pool is None:
            self.opts = [torch.optim.Adam(params, lr=lr)]
        else:
            # one Adam over the parameters as one flat tensor where that is exact (:func:`_flat`), on this thread:
            # measured 2026-12-07, two Adam halves on two threads took longer (0.56 ms) than both here (0.33 ms)
            self.opts = [torch.optim.Adam(_flat(params), lr=lr)]
        self.gw: list[Any] = [m.weight.grad for m in self.lin]
        self.gb: list[Any] = [m.bias.grad for m in self.lin]

    # ---------------------------------------------------------------- the parts

    def _params(self) -> tuple[list[Any], list[Any]]:
        """The weights and biases the products use: the float32 ones, or (bf16) their casts of this step."""
        if self.bf16:
            return self.w16, self.b16
        return [m.weight for m in self.lin], [m.bias for m in self.lin]

    def _cast(self) -> None:
        """bf16: cast the float32 weights and biases to bfloat16 (once a step, before the parts)."""
        if self.bf16:
            for m, w, b in zip(self.lin, self.w16, self.b16, strict=True):
                w.copy_(m.weight.detach())
                b.copy_(m.bias.detach())

    def _rows(self, x: Any, y: Any, n: int, r0: int, r1: int) -> None:
        """Forward pass, loss gradient and input-gradient chain of rows r0:r1 of the batch (row-local)."""
        import torch

        ws, bs = self._params()
        with torch.no_grad():
            a = x[r0:r1]
            if self.x16 is not None:
                a = self.x16[r0:r1].copy_(a)  # the batch in bfloat16 (the weight gradients of layer 0 use it too)
            for k in range(len(self.lin) - 1):
                z = self.z[k][r0:r1]
                torch.addmm(bs[k], a, ws[k].t(), out=z)
                a = self.act[k][r0:r1]
                torch.ops.aten.leaky_relu.out(z, _SLOPE, out=a)
            s = torch.sigmoid(torch.addmm(bs[-1], a, ws[-1].t()).squeeze(1).float())
            g = s.sub_(y[r0:r1]).div_(n).unsqueeze(1)  # BCEWithLogits (mean): (sigmoid(z) - y) * 1 / n
            self.gz[-1][r0:r1].copy_(g)
            g = self.gz[-1][r0:r1]
            for k in range(len(self.lin) - 1, 0, -1):
                ga = g.mm(ws[k])
                g = self.gz[k - 1][r0:r1]
                torch.ops.aten.leaky_relu_backward.grad_input(ga, self.z[k - 1][r0:r1], _SLOPE, False, grad_input=g)

    def _weights(self, x: Any, n: int, part: int) -> None:
        """Weight gradients (part 0: the first output units of each layer and the biases; part 1: the rest)."""
        import torch

        gw, gb = (self.gw16, self.gb16) if self.bf16 else (self.gw, self.gb)
        with torch.no_grad():
            for k, m in enumerate(self.lin):
                gz = self.gz[k][:n]
                a = (x if self.x16 is None else self.x16[:n]) if k == 0 else self.act[k - 1][:n]
                o = int(m.weight.shape[0])
                c = _cut(o) if self.pool is not None else 0
                lo, hi = (0, o) if not c else ((0, c) if part == 0 else (c, o))
                if c or part == 1 or self.pool is None:
                    torch.mm(gz[:, lo:hi].t(), a, out=gw[k][lo:hi])
                    if self.bf16:
                        self.gw[k][lo:hi].copy_(gw[k][lo:hi])  # the cast backward: bfloat16 -> float32
                if part == 0:
                    torch.sum(gz, 0, out=gb[k])
                    if self.bf16:
                        self.gb[k].copy_(gb[k])

    def _pair(self, first: Callable[[], None], second: Callable[[], None]) -> None:
        """``first()`` here and ``second()`` on the helper while a core is spare (else, or if it has not started, here)."""
        if self.pool is None or not spare_core():
            first()
            second()
            return
        fut = self.pool.submit(second)
        try:
            first()
        except BaseException:
            if not fut.cancel():
                fut.exception()  # let the helper finish before the error propagates
            raise
        if fut.cancel():
            second()
        else:
            fut.result()

    # ---------------------------------------------------------------- public

    def step(self, x: Any, y: Any) -> None:
        """One Adam step on the batch ``x`` (n, d), a contiguous float32 tensor, labels ``y`` (n,)."""
        n = int(x.shape[0])
        h = _cut(n) if self.pool is not None else 0
        self._cast()
        if h:
            self._pair(lambda: self._rows(x, y, n, 0, h), lambda: self._rows(x, y, n, h, n))
        else:
            self._rows(x, y, n, 0, n)
        if self.pool is None:
            self._weights(x, n, 0)
        else:
            self._pair(lambda: self._weights(x, n, 0), lambda: self._weights(x, n, 1))
        for opt in self.opts:
            opt.step()

    def _predict_rows(self, x: Any, out: Any, r0: int, r1: int, chunk: int) -> None:
        import torch

        ws, bs = self._params()
        with torch.no_grad():
            for i in range(r0, r1, chunk):
                j = min(i + chunk, r1)
                a = x[i:j] if not self.bf16 else x[i:j].to(torch.bfloat16)
                for w, b in zip(ws[:-1], bs[:-1], strict=True):
                    a = torch.nn.functional.leaky_relu(torch.addmm(b, a, w.t()), _SLOPE)
                torch.sigmoid(torch.addmm(bs[-1], a, ws[-1].t()).squeeze(1).float(), out=out[i:j])

    def predict(self, x: Any, chunk: int = 2048) -> np.ndarray:
        """Sigmoid outputs (float64) as :func:`_predict`; with the helper, two halves of the rows (cut at 32 rows).

        Chunks of 2048 rows keep a 256-wide layer's activations (2 MB) near the core's cache: measured
        2026-12-07 (40,000 rows, 2 x 256), 40-44 ms against 71 ms with 8192-row chunks; the outputs are
        bitwise those of one call over all rows (row blocks are independent in these kernels).
        """
        import torch

        n = int(x.shape[0])
        out = torch.empty(n)
        self._cast()
        h = -(-n // (2 * _ALIGN)) * _ALIGN if self.pool is not None and _cut(n) else 0  # half, rounded up to 32 rows
        if h:
            self._pair(lambda: self._predict_rows(x, out, 0, h, chunk), lambda: self._predict_rows(x, out, h, n, chunk))
        else:
            self._predict_rows(x, out, 0, n, chunk)
        return out.numpy().astype(np.float64)


def _fit(reference: np.ndarray, candidate: np.ndarray, cfg: dict[str, Any], *, preset: str, threads: int,
         split: tuple[float, float, float], min_events: int, seed: int, progress: bool,
         on_epoch: Callable[[int, int, float], None] | None, label: str) -> FittedClassifier:
    import torch

    rng = np.random.default_rng(np.random.SeedSequence(seed))
    (xtr, ytr), (xte, yte), (xva, yva) = _prepare(reference, candidate, split, cfg["max_events"], min_events, rng)
    if cfg["standardize"]:
        mu = xtr.mean(axis=0)
        sd = xtr.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        xtr, xte, xva = ((v - mu) / sd for v in (xtr, xte, xva))
    n_hidden, n_layers, epochs = int(cfg["n_hidden"]), int(cfg["n_layers"]), int(cfg["epochs"])
    patience = int(cfg["patience"])
    if patience < 0:
        msg = f"classifier: patience must be >= 0 (0: run every epoch), got {patience}"
        raise ConfigError(msg)
    g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(0, 2**62)))
        net = _net(xtr.shape[1], n_hidden, n_layers, float(cfg["dropout"]))
    ttr, ytr_t = torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(ytr)
    tte = torch.from_numpy(np.ascontiguousarray(xte))
    tva = torch.from_numpy(np.ascontiguousarray(xva))
    batch_size = cfg["batch_size"]
    if batch_size is None:
        batch_size = min(1000, max(32, ttr.shape[0] // 20))
    precision = str(cfg["precision"])
    if precision not in _PRECISIONS:
        msg = f"classifier: unknown precision {precision!r}; allowed: {', '.join(_PRECISIONS)}"
        raise ConfigError(msg)
    bf16 = precision == "bfloat16"
    # the hand steps give bitwise the autograd loop's numbers (bfloat16: the loop under torch.autocast)
    hand = _HAND_STEPS and float(cfg["dropout"]) == 0.0
    with busy_core(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="classifier-half") as pool:
        if hand:
            if threads == 1:
                pool.submit(torch.set_num_threads, 1).result()  # the helper's own OpenMP setting
            steps = _HandSteps(net, float(cfg["lr"]), int(batch_size), pool if threads == 1 else None, bf16=bf16)
            best_epoch, best_acc, history, p_te = _train(
                net, ttr, ytr_t, tte, yte, g, int(batch_size), epochs, patience, preset, label, progress, on_epoch, steps.step,
                steps.predict,
            )
            p_va = steps.predict(tva)
        else:
            opt = torch.optim.Adam(net.parameters(), lr=float(cfg["lr"]))
            loss_fn = torch.nn.BCEWithLogitsLoss()

            def autograd_step(xb: Any, yb: Any) -> None:
                opt.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = net(xb).squeeze(1)
                loss = loss_fn(logits.float(), yb)  # the loss (and Adam, on the float32 weights) in float32
                loss.backward()
                opt.step()

            def predict(t: Any) -> np.ndarray:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    return _predict(net, t)

            best_epoch, best_acc, history, p_te = _train(
                net, ttr, ytr_t, tte, yte, g, int(batch_size), epochs, patience, preset, label, progress, on_epoch,
                autograd_step, predict,
            )
            p_va = predict(tva)
    n_in = int(xtr.shape[1])
    settings = {
        "preset": preset,
        "label": CLASSIFIER_PRESET_LABELS.get(preset.split(" ")[0], ""),
        "architecture": f"{n_in} -> {n_layers} x [Linear({n_hidden}) -> LeakyReLU] -> Linear(1), BCEWithLogits",
        "n_hidden": n_hidden,
        "n_layers": n_layers,
        "dropout": float(cfg["dropout"]),
        "n_parameters": int(sum(p.numel() for p in net.parameters())),
        "optimizer": f"Adam, lr {float(cfg['lr']):g}, batch {int(batch_size)}",
        "epochs": epochs,
        "epochs_run": len(history),
        "patience": patience,
        "selected_epoch": best_epoch + 1,
        "selection": "best test-split accuracy"
        + (f", stopped after {patience} epochs without a better one" if patience else ""),
        "best_test_accuracy": best_acc,
        "calibrate": bool(cfg["calibrate"]),
        "calibration": "isotonic regression on the test split" if cfg["calibrate"] else "none",
        "input_scaling": "standardised on the training split" if cfg["standardize"] else "none (CaloChallenge inputs)",
        "n_train": int(ytr.size),
        "n_test": int(yte.size),
        "n_heldout": int(yva.size),
        "max_events": cfg["max_events"],
        "seed": int(seed),
        "threads": threads,
        "dtype": "float32",
        "precision": precision,
        "matmul": "bfloat16 (torch.autocast; float32 weights, loss and Adam)" if bf16 else "float32",
    }
    return FittedClassifier(p_te, yte.astype(np.float64), p_va, yva.astype(np.float64), int(ytr.size), best_epoch,
                            tuple(history), settings)


def _train(net: Any, ttr: Any, ytr: Any, tte: Any, yte: np.ndarray, g: Any, batch_size: int, epochs: int, patience: int,
           preset: str,
           label: str, progress: bool, on_epoch: Callable[[int, int, float], None] | None,
           step: Callable[[Any, Any], None], predict: Callable[[Any], np.ndarray]) -> tuple[int, float, list[float], np.ndarray]:
    """The epochs: shuffled batches, test accuracy after each, the first best epoch's network kept (and loaded at the end).

    ``patience`` > 0 ends the run once that many epochs in a row brought no better test accuracy: on
    two samples of the same physics the accuracy stays at chance and the run ends early; on
    separable ones it keeps rising and the run goes on.

    Returns (best epoch, its test accuracy, the accuracies, its test-split outputs). Each
    epoch's batches are contiguous slices of the training split gathered once in the epoch's random
    order (the rows ``ttr[perm[i:i + batch_size]]`` of the plain loop); the test-split outputs of the
    selected epoch are kept, not recomputed from its reloaded state (the same numbers).
    """
    import torch

    best_acc, best_epoch, best_state, p_best = -1.0, 0, None, None
    history: list[float] = []
    desc = f"classifier{f' ({label})' if label else ''} [{preset.split(' ')[0]}] epochs"
    with progress_bar(desc, epochs, enabled=progress) as bar:
        for epoch in range(epochs):
            net.train()
            perm = torch.randperm(ttr.shape[0], generator=g)
            xs, ys = ttr.index_select(0, perm), ytr.index_select(0, perm)
            for i in range(0, ttr.shape[0], batch_size):
                step(xs[i : i + batch_size], ys[i : i + batch_size])
            net.eval()
            p = predict(tte)
            acc = float(((p > 0.5) == (yte > 0.5)).mean())
            history.append(acc)
            if acc > best_acc:  # the first epoch of the best test accuracy, as evaluate.py
                best_acc, best_epoch, p_best = acc, epoch, p
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            bar.advance(1)
            if on_epoch is not None:
                on_epoch(epoch + 1, epochs, acc)
            if acc == 1.0:  # evaluate.py stops here too: no later epoch can be selected
                break
            if patience and epoch - best_epoch >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    assert p_best is not None
    return best_epoch, best_acc, history, p_best


_SETTING_ROWS = (
    ("preset", "preset"), ("label", ""), ("architecture", "architecture"), ("n_parameters", "parameters"),
    ("optimizer", "optimiser"), ("epochs", "epochs"), ("selected_epoch", "selected epoch"),
    ("calibration", "calibration"), ("input_scaling", "input scaling"), ("n_train", "train"),
    ("n_test", "test"), ("n_heldout", "held-out"), ("seed", "seed"), ("threads", "torch threads"),
    ("matmul", "matrix products"),
)


def settings_lines(classifier: dict[str, Any]) -> list[str]:
    """One line per input kind: the settings a classifier result was trained with (report and summaries).

    ``classifier`` maps an input kind (``high``, ``low``) to a result dict (:meth:`ClassifierResult.to_dict`).
    """
    out = []
    for kind, m in classifier.items():
        s = m.get("settings") if isinstance(m, dict) else None
        if not s:
            continue
        sel = f"selected epoch {s['selected_epoch']} of {s['epochs_run']} run ({s['epochs']} max, {s['selection']})"
        out.append(
            f"classifier ({kind}): preset {s['preset']!r} ({s['label']}); {s['architecture']}; {s['optimizer']}; "
            f"{sel}; calibration: {s['calibration']}; inputs: {s['input_scaling']}; train/test/held-out "
            f"{s['n_train']}/{s['n_test']}/{s['n_heldout']}; seed {s['seed']}; {s['threads']} torch thread(s); "
            f"matrix products {s.get('matmul', 'float32')}"
        )
    return out


def settings_html(classifier: dict[str, Any]) -> str:
    """An HTML table of the classifier settings per input kind (for the validation report)."""
    import html

    kinds = [k for k, m in classifier.items() if isinstance(m, dict) and m.get("settings")]
    if not kinds:
        return ""
    head = "".join(f"<th>{html.escape(k)}</th>" for k in kinds)
    rows = []
    for key, name in _SETTING_ROWS:
        cells = "".join(f"<td>{html.escape(str(classifier[k]['settings'].get(key, '')))}</td>" for k in kinds)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return f'<table class="classifier-settings"><tr><th>classifier</th>{head}</tr>{"".join(rows)}</table>'
