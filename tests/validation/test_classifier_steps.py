"""The classifier's hand-computed, two-part training steps give the numbers of the plain autograd loop.

``classifier._HandSteps`` computes each Adam step by hand in fixed parts (rows, output units, parameters)
that the classifier's helper thread may take while a core is spare. These tests pin that the parts,
whoever runs them, give bitwise the parameters and outputs of the loop the classifier had before
(``_old_fit`` below, the autograd loop as it was), so the speed-up changes no number in metrics.json.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch

from simcompress.validation import classifier as C
from simcompress.validation import feature_kernel as FK


def _old_fit(reference: np.ndarray, candidate: np.ndarray, *, n_hidden: int, n_layers: int, epochs: int,
             batch_size: int | None, lr: float, threads: int, seed: int = 0, max_events: int | None = None,
             standardize: bool = True) -> tuple[np.ndarray, np.ndarray, list[float], int]:
    """The training loop of ``classifier._fit`` before the hand steps (autograd, ``ttr[idx]`` batches), verbatim."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        (xtr, ytr), (xte, yte), (xva, _) = C._prepare(reference, candidate, (0.6, 0.2, 0.2), max_events, 100, rng)
        if standardize:
            mu, sd = xtr.mean(axis=0), xtr.std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            xtr, xte, xva = ((v - mu) / sd for v in (xtr, xte, xva))
        g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(0, 2**62)))
            net = C._net(xtr.shape[1], n_hidden, n_layers, 0.0)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        ttr, ytr_t = torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(ytr)
        tte = torch.from_numpy(np.ascontiguousarray(xte))
        if batch_size is None:
            batch_size = min(1000, max(32, ttr.shape[0] // 20))
        best_acc, best_epoch, best_state = -1.0, 0, None
        history: list[float] = []
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
            acc = float(((C._predict(net, tte) > 0.5) == (yte > 0.5)).mean())
            history.append(acc)
            if acc > best_acc:
                best_acc, best_epoch = acc, epoch
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            if acc == 1.0:
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        p_te = C._predict(net, tte)
        p_va = C._predict(net, torch.from_numpy(np.ascontiguousarray(xva)))
        return p_te, p_va, history, best_epoch
    finally:
        torch.set_num_threads(old)


def _samples(n: int, d: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d))
    b[:, 0] += shift
    b[:, 1] *= 1.0 + shift
    return a, b


CASES = [
    # n, d, n_hidden, n_layers, batch_size (None: the gate preset's rule), epochs, threads
    pytest.param(2000, 30, 256, 2, None, 3, 1, id="gate-shape"),
    pytest.param(1500, 7, 40, 1, 64, 3, 1, id="one-layer-40-units-partial-batches"),
    pytest.param(1200, 5, 16, 3, 50, 2, 1, id="three-layers-narrow"),
    pytest.param(1000, 9, 48, 3, 100, 2, 2, id="two-torch-threads-unsplit"),
]


@pytest.mark.parametrize(("n", "d", "n_hidden", "n_layers", "batch_size", "epochs", "threads"), CASES)
def test_hand_steps_give_the_autograd_loops_numbers(n, d, n_hidden, n_layers, batch_size, epochs, threads) -> None:
    a, b = _samples(n, d, 0.3, seed=n + d)
    kw: dict[str, Any] = {"n_hidden": n_hidden, "n_layers": n_layers, "epochs": epochs, "batch_size": batch_size,
                          "lr": 1e-3, "threads": threads}
    p_te, p_va, history, best = _old_fit(a, b, seed=5, **kw)
    f = C.fit_classifier(a, b, preset="gate", seed=5, **kw)
    assert np.array_equal(f.p_test, p_te) and np.array_equal(f.p_heldout, p_va)
    assert list(f.test_accuracy) == history and f.best_epoch == best


def test_autograd_path_still_gives_the_same_numbers(monkeypatch) -> None:
    """The plain loop (kept for dropout > 0) with its per-epoch gathered batches: the old loop's numbers too."""
    a, b = _samples(1500, 6, 0.3, seed=1)
    kw: dict[str, Any] = {"n_hidden": 32, "n_layers": 2, "epochs": 3, "batch_size": 64, "lr": 1e-3, "threads": 1}
    p_te, p_va, history, _ = _old_fit(a, b, seed=2, **kw)
    monkeypatch.setattr(C, "_HAND_STEPS", False)
    f = C.fit_classifier(a, b, preset="gate", seed=2, **kw)
    assert np.array_equal(f.p_test, p_te) and np.array_equal(f.p_heldout, p_va) and list(f.test_accuracy) == history


def test_which_thread_computes_a_part_changes_no_number(monkeypatch) -> None:
    """Helper thread always (every core spare) or never (none spare): the same numbers, and the helper did work."""
    a, b = _samples(2400, 12, 0.2, seed=3)
    kw: dict[str, Any] = {"n_hidden": 64, "n_layers": 2, "epochs": 3, "seed": 4}
    ran: list[str] = []
    rows = C._HandSteps._rows

    def spy(self: Any, *args: Any) -> None:
        ran.append(threading.current_thread().name)
        rows(self, *args)

    monkeypatch.setattr(C._HandSteps, "_rows", spy)
    monkeypatch.setattr(FK, "_n_cores", lambda: 0)  # no spare core: this thread computes both parts
    never = C.fit_classifier(a, b, **kw)
    assert ran and all(not name.startswith("classifier-half") for name in ran)
    ran.clear()
    monkeypatch.setattr(FK, "_n_cores", lambda: 64)
    always = C.fit_classifier(a, b, **kw)
    assert any(name.startswith("classifier-half") for name in ran)
    for x, y in ((never.p_test, always.p_test), (never.p_heldout, always.p_heldout)):
        assert np.array_equal(x, y)
    assert never.test_accuracy == always.test_accuracy
    assert FK._BUSY[0] == 0  # the classifier's thread gave its core back


def test_a_failing_part_on_the_helper_surfaces(monkeypatch) -> None:
    a, b = _samples(800, 4, 0.2, seed=6)
    monkeypatch.setattr(FK, "_n_cores", lambda: 64)
    rows = C._HandSteps._rows

    def broken(self: Any, x: Any, y: Any, n: int, r0: int, r1: int) -> None:
        if r0 > 0 and threading.current_thread().name.startswith("classifier-half"):
            raise RuntimeError("part failed")
        rows(self, x, y, n, r0, r1)

    monkeypatch.setattr(C._HandSteps, "_rows", broken)
    with pytest.raises(RuntimeError, match="part failed"):
        C.fit_classifier(a, b, n_hidden=32, epochs=1, batch_size=128)
    assert FK._BUSY[0] == 0


def test_busy_core_counts_the_threads_that_hold_a_core(monkeypatch) -> None:
    monkeypatch.setattr(FK, "_n_cores", lambda: 2)
    assert FK.spare_core()
    with FK.busy_core():
        assert FK.spare_core()
        with FK.busy_core():
            assert not FK.spare_core()
        assert FK.spare_core()
    with pytest.raises(ValueError, match="inside"), FK.busy_core():
        raise ValueError("inside")
    assert FK._BUSY[0] == 0 and FK.spare_core()


def test_candidate_metrics_hold_their_core_while_the_classifier_trains(reference, independent, fast_spec, monkeypatch) -> None:
    """evaluate_candidate's own thread marks its core taken before the classifier starts, and frees it after."""
    from simcompress.validation import evaluation as E
    from simcompress.validation.prepared import PreparedReference

    prep = PreparedReference.build(reference, fast_spec, progress=False, cache=False)
    seen: list[int] = []
    run = E._run_classifier

    def spy(spec: Any, x: Any, y: Any) -> Any:
        seen.append(FK._BUSY[0])
        return run(spec, x, y)

    monkeypatch.setattr(E, "_run_classifier", spy)
    E.evaluate_candidate(prep, "independent", independent)
    assert seen and seen[0] >= 1 and FK._BUSY[0] == 0


def test_flat_adam_updates_are_bitwise_those_of_separate_tensors() -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 64), (128,), (2, 32), (5,)]  # every tensor but the last a multiple of 64 elements
    sep = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    flat_src = [torch.nn.Parameter(p.detach().clone()) for p in sep]
    flat = C._flat(flat_src)
    assert len(flat) == 1 and flat[0].numel() == sum(p.numel() for p in sep)
    opt_sep, opt_flat = torch.optim.Adam(sep, lr=1e-2), torch.optim.Adam(flat, lr=1e-2)
    for _ in range(50):
        for p, q in zip(sep, flat_src, strict=True):
            gr = torch.randn(p.shape, generator=g)
            p.grad = gr.clone()
            q.grad.copy_(gr)  # a view of the flat gradient
        opt_sep.step()
        opt_flat.step()
    assert all(torch.equal(p, q) for p, q in zip(sep, flat_src, strict=True))
    odd = [torch.nn.Parameter(torch.zeros(40)), torch.nn.Parameter(torch.zeros(64))]
    assert C._flat(odd) == odd  # 40 elements before the last: kept as separate tensors


@pytest.mark.parametrize(("n", "d", "n_hidden", "n_layers", "batch_size", "epochs", "threads"), CASES)
def test_bfloat16_hand_steps_give_the_autocast_loops_numbers(monkeypatch, n, d, n_hidden, n_layers, batch_size, epochs,
                                                             threads) -> None:
    """precision bfloat16: the hand steps give bitwise what the autograd loop under torch.autocast gives."""
    a, b = _samples(n, d, 0.3, seed=n + d + 1)
    kw: dict[str, Any] = {"n_hidden": n_hidden, "n_layers": n_layers, "epochs": epochs, "batch_size": batch_size,
                          "lr": 1e-3, "threads": threads, "precision": "bfloat16", "preset": "gate", "seed": 7}
    hand = C.fit_classifier(a, b, **kw)
    monkeypatch.setattr(C, "_HAND_STEPS", False)
    loop = C.fit_classifier(a, b, **kw)
    assert np.array_equal(hand.p_test, loop.p_test) and np.array_equal(hand.p_heldout, loop.p_heldout)
    assert hand.test_accuracy == loop.test_accuracy and hand.best_epoch == loop.best_epoch
    assert hand.settings["precision"] == "bfloat16" and "autocast" in hand.settings["matmul"]
    # bfloat16 is a different computation from float32: the outputs differ (else the setting did nothing)
    f32 = C.fit_classifier(a, b, **{**kw, "precision": "float32"})
    assert not np.array_equal(f32.p_test, hand.p_test)


def test_bfloat16_numbers_do_not_depend_on_which_thread_computes_a_part(monkeypatch) -> None:
    a, b = _samples(2400, 12, 0.2, seed=8)
    kw: dict[str, Any] = {"n_hidden": 64, "n_layers": 2, "epochs": 3, "seed": 4, "precision": "bfloat16"}
    monkeypatch.setattr(FK, "_n_cores", lambda: 0)
    never = C.fit_classifier(a, b, **kw)
    monkeypatch.setattr(FK, "_n_cores", lambda: 64)
    always = C.fit_classifier(a, b, **kw)
    assert np.array_equal(never.p_test, always.p_test) and np.array_equal(never.p_heldout, always.p_heldout)
    assert never.test_accuracy == always.test_accuracy
