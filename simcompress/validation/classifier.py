"""Classifier two-sample test (CaloChallenge ``cls-low`` / ``cls-high``), the only torch module here.

A small fully connected network (Linear -> LeakyReLU blocks, BCEWithLogits, Adam) learns to
tell reference from candidate. The two samples are balanced, split train / test / held-out
(60/20/20 by default); the best epoch is chosen by test accuracy, the output is optionally
calibrated by isotonic regression on the test split (as CaloChallenge does), and AUC and
JSD = (ln 2 - BCE) / ln 2 are reported on the held-out split. AUC 0.5 means the network
cannot tell the samples apart. Fully seeded: the same inputs and seed give the same numbers.

Inputs (see :func:`low_level_inputs`, :func:`simcompress.validation.features.high_level_vector`):
``low`` = ``[log10 E_inc, voxels / E_inc]``; ``high`` = the CaloChallenge high-level vector.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ._shared import TooFewEventsError

__all__ = ["ClassifierResult", "classifier_test", "isotonic_fit", "low_level_inputs", "roc_auc"]


@dataclass(frozen=True)
class ClassifierResult:
    """Held-out AUC and JSD, with the split sizes and the chosen epoch."""

    auc: float
    jsd: float
    bce: float
    n_train: int
    n_test: int
    n_heldout: int
    best_epoch: int
    calibrated: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    """Isotonic (non-decreasing) least-squares fit by pool-adjacent-violators.

    Returns ``(x_knots, y_knots)`` for :func:`numpy.interp` (constant extrapolation).
    """
    order = np.argsort(x, kind="mergesort")
    xs = np.asarray(x, dtype=np.float64)[order]
    ys = np.asarray(y, dtype=np.float64)[order]
    # pool equal x first so ties share one value
    ux, start = np.unique(xs, return_index=True)
    sums = np.add.reduceat(ys, start)
    cnts = np.diff(np.append(start, xs.size)).astype(np.float64)
    vals: list[float] = []
    wts: list[float] = []
    nblk: list[int] = []
    for s, c in zip(sums, cnts, strict=True):
        vals.append(s / c)
        wts.append(c)
        nblk.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            w = wts[-2] + wts[-1]
            v = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w
            k = nblk[-2] + nblk[-1]
            vals[-2:], wts[-2:], nblk[-2:] = [v], [w], [k]
    fitted = np.repeat(vals, nblk)
    return ux, fitted


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


def classifier_test(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    n_hidden: int = 256,
    n_layers: int = 2,
    dropout: float = 0.0,
    epochs: int = 20,
    batch_size: int | None = None,
    lr: float = 1e-3,
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    calibrate: bool = True,
    max_events: int | None = None,
    min_events: int = 100,
    seed: int = 0,
    standardize: bool = True,
    num_threads: int | None = 1,
) -> ClassifierResult:
    """Train a classifier to separate ``reference`` rows from ``candidate`` rows; report held-out AUC/JSD.

    Args:
        reference, candidate: (N, D) input arrays (see module docstring).
        batch_size: training batch size; ``None`` picks min(1000, max(32, n_train // 20)) so small
            samples still get enough optimiser steps per epoch (CaloChallenge uses 1000).
        max_events: cap per class (random subsample) to bound training time.
        min_events: refuse (``TooFewEventsError``) with fewer events per class.
        standardize: scale inputs by the training split's mean and std (fitted on training data only).
        seed: seeds the subsampling, split, initialisation and batch order.
        num_threads: torch intra-op threads while training (restored afterwards); ``None`` keeps torch's.
    """
    import torch

    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        return _classifier_test(
            reference, candidate, n_hidden=n_hidden, n_layers=n_layers, dropout=dropout, epochs=epochs,
            batch_size=batch_size, lr=lr, split=split, calibrate=calibrate, max_events=max_events,
            min_events=min_events, seed=seed, standardize=standardize,
        )
    finally:
        torch.set_num_threads(old_threads)


def _classifier_test(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    n_hidden: int,
    n_layers: int,
    dropout: float,
    epochs: int,
    batch_size: int | None,
    lr: float,
    split: tuple[float, float, float],
    calibrate: bool,
    max_events: int | None,
    min_events: int,
    seed: int,
    standardize: bool,
) -> ClassifierResult:
    import torch

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
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    n = min(a.shape[0], b.shape[0])
    if max_events is not None:
        n = min(n, int(max_events))
    if n < min_events:
        msg = f"classifier test: {n} events per class after balancing, need at least {min_events}"
        raise TooFewEventsError(
            msg
        )
    a = a[rng.permutation(a.shape[0])[:n]]
    b = b[rng.permutation(b.shape[0])[:n]]
    n_tr = round(split[0] * n)
    n_te = round(split[1] * n)
    parts = []
    for lo, hi in ((0, n_tr), (n_tr, n_tr + n_te), (n_tr + n_te, n)):
        x = np.concatenate([a[lo:hi], b[lo:hi]])
        y = np.concatenate([np.zeros(hi - lo, np.float32), np.ones(hi - lo, np.float32)])
        parts.append((x, y))
    (xtr, ytr), (xte, yte), (xva, yva) = parts
    if standardize:
        mu = xtr.mean(axis=0)
        sd = xtr.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        xtr, xte, xva = ((v - mu) / sd for v in (xtr, xte, xva))

    g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(0, 2**62)))
        net = _net(xtr.shape[1], n_hidden, n_layers, dropout)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    ttr, ytr_t = torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(ytr)
    tte = torch.from_numpy(np.ascontiguousarray(xte))
    if batch_size is None:
        batch_size = min(1000, max(32, ttr.shape[0] // 20))
    best_acc, best_epoch, best_state = -1.0, 0, None
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(ttr.shape[0], generator=g)
        for i in range(0, ttr.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            loss = loss_fn(net(ttr[idx]).squeeze(1), ytr_t[idx])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            acc = float(((net(tte).squeeze(1) > 0).numpy() == (yte > 0.5)).mean())
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        p_te = torch.sigmoid(net(tte).squeeze(1)).numpy().astype(np.float64)
        p_va = torch.sigmoid(net(torch.from_numpy(np.ascontiguousarray(xva))).squeeze(1)).numpy().astype(np.float64)
    if calibrate:
        kx, ky = isotonic_fit(p_te, yte)
        p_va = np.interp(p_va, kx, ky)
    auc = roc_auc(yva, p_va)
    p = np.clip(p_va, 1e-7, 1 - 1e-7)
    bce = float(-np.mean(yva * np.log(p) + (1 - yva) * np.log(1 - p)))
    jsd = (math.log(2.0) - bce) / math.log(2.0)
    return ClassifierResult(auc, jsd, bce, 2 * n_tr, 2 * n_te, 2 * (n - n_tr - n_te), best_epoch, calibrate)
