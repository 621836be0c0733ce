"""The cheap compression-gate spec of the gate-stability tests (a module of its own, not conftest)."""

from __future__ import annotations

from simcompress.validation.gate import load_gate_spec


def cheap_compression_spec():
    """The ``compression`` preset's rules with cheaper settings (small classifier, fewer resamples and splits)."""
    s = load_gate_spec("compression").model_dump(mode="json")
    s["classifier"].update(epochs=3, n_hidden=32, max_events=2000, floor=False)
    s["fpd"].update(num_batches=5, num_points=4)
    s["kpd"].update(num_batches=5, batch_size=800)
    s["bootstrap"].update(n_boot=4, n_boot_hist=50)
    s["false_alarm"].update(n_splits=60, n_holdout=10)
    return type(load_gate_spec("compression")).model_validate(s)
