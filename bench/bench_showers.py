"""Benchmark of the showers package: reference-simulation rate and ROOT write/read rates.

* GFlash reference simulation, showers per second (one process; numpy is single-threaded here),
  on ds1-photons (the throughput target: >= 2000 showers/s on one core) and on ds2.
* ROOT writing and reading with :func:`simcompress.showers.io.write_showers` /
  :func:`open_showers` against raw uproot writing/reading the *same arrays* with the same
  codec (ZSTD(1)) and basket size, in the same run: ``ratio = ours / raw`` (events/s).
  "ours" includes the value checks (NaN/negative), the content hash and the provenance;
  raw uproot does none of that.
* Files from other tools: CaloGAN's Geant4 layout (``fancy_tree``, 507 ``double`` cell branches,
  ``TotalEnergy`` in GeV) and an ``RVec<float>``-style jagged ``voxels`` branch, read with
  :func:`open_showers` (geometry inferred, overflow dropped, units converted, float32) against
  raw ``uproot.iterate`` of the same branches stacked into one array, in the same run.
* GFlash in the Cartesian geometries (calogan, grid-25).

Usage: ``python bench/bench_showers.py [--quick]`` (prints JSON) or ``python -m bench --only showers``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _sim_rate(geometry: str, n: int, energies: str, repeat: int) -> dict[str, float]:
    from simcompress.showers.reference import simulate

    simulate(geometry, min(n, 512), energies=energies, seed=0, progress=False)  # warm caches/imports
    dt = _best_of(lambda: simulate(geometry, n, energies=energies, seed=1, progress=False), repeat)
    return {"events": n, "seconds": dt, "showers_per_s": n / dt}


def _raw_uproot_write(path: Path, inc: np.ndarray, vox: np.ndarray, layout: str, step: int) -> None:
    import awkward as ak
    import uproot

    with uproot.recreate(path, compression=uproot.ZSTD(1)) as f:
        if layout == "dense":
            t = f.mktree("showers", {"incident_energy": np.float32, "voxels": ("float32", (vox.shape[1],))},
                         initial_basket_capacity=64)
            for a in range(0, len(inc), step):
                t.extend({"incident_energy": inc[a : a + step], "voxels": vox[a : a + step]})
        else:
            t = f.mktree("showers", {"incident_energy": np.float32, "hit_idx": "var * uint16", "hit_e": "var * float32"},
                         counter_name=lambda c: "nhit", initial_basket_capacity=64)
            for a in range(0, len(inc), step):
                block = vox[a : a + step]
                rows, cols = np.nonzero(block)
                counts = np.bincount(rows, minlength=len(block))
                t.extend({
                    "incident_energy": inc[a : a + step],
                    "hit_idx": ak.unflatten(cols.astype(np.uint16), counts),
                    "hit_e": ak.unflatten(block[rows, cols], counts),
                })


def _raw_uproot_read(path: Path, layout: str, n_vox: int) -> int:
    import awkward as ak
    import uproot

    n = 0
    if layout == "dense":
        for b in uproot.iterate(f"{path}:showers", ["incident_energy", "voxels"], step_size=100_000, library="np"):
            n += len(b["incident_energy"])
    else:
        for b in uproot.iterate(f"{path}:showers", ["incident_energy", "nhit", "hit_idx", "hit_e"], step_size=100_000,
                                library="ak"):
            counts = ak.to_numpy(b["nhit"])
            out = np.zeros((len(counts), n_vox), np.float32)  # same dense output as ours
            out[np.repeat(np.arange(len(counts)), counts), ak.to_numpy(ak.flatten(b["hit_idx"]))] = ak.to_numpy(
                ak.flatten(b["hit_e"]))
            n += len(counts)
    return n


def _io_rates(showers, layout: str, repeat: int) -> dict[str, object]:
    from simcompress.showers import io

    inc, vox = showers.incident_energy, showers.showers
    n = len(inc)
    per_event = 4 * (vox.shape[1] + 1) if layout == "dense" else 4 + 6 * max(1, vox.shape[1] // 8)
    step = int(np.clip(io.BASKET_BYTES // per_event, 1000, 200_000))  # the basket size our writer uses
    with tempfile.TemporaryDirectory() as d:
        ours, raw = Path(d) / "ours.root", Path(d) / "raw.root"
        t_w_ours = _best_of(lambda: io.write_showers(ours, showers, layout=layout), repeat)
        t_w_raw = _best_of(lambda: _raw_uproot_write(raw, inc, vox, layout, step), repeat)
        t_r_ours = _best_of(lambda: sum(len(c) for c in io.open_showers(ours).iterate(step_size=100_000)), repeat)
        t_r_raw = _best_of(lambda: _raw_uproot_read(raw, layout, vox.shape[1]), repeat)
        size_ours, size_raw = ours.stat().st_size, raw.stat().st_size
    return {
        "events": n,
        "layout": layout,
        "file_mb_ours": size_ours / 1e6,
        "file_mb_raw": size_raw / 1e6,
        "write_ev_per_s_ours": n / t_w_ours,
        "write_ev_per_s_raw_uproot": n / t_w_raw,
        "write_ratio_ours_over_raw": t_w_raw / t_w_ours,
        "read_ev_per_s_ours": n / t_r_ours,
        "read_ev_per_s_raw_uproot": n / t_r_raw,
        "read_ratio_ours_over_raw": t_r_raw / t_r_ours,
    }


def _foreign_rates(showers, repeat: int) -> dict[str, object]:
    """Reading files written by other tools: ours (open_showers) vs raw uproot on the same branches."""
    import awkward as ak
    import uproot

    from simcompress.showers import io

    n = len(showers)
    cells = np.concatenate([showers.showers, np.zeros((n, 3), np.float32)], axis=1).astype(np.float64)
    names = [f"cell_{i}" for i in range(cells.shape[1])]
    out: dict[str, object] = {"events": n}
    with tempfile.TemporaryDirectory() as d:
        flat, jag = Path(d) / "fancy.root", Path(d) / "jagged.root"
        with uproot.recreate(flat, compression=uproot.ZSTD(1)) as f:
            t = f.mktree("fancy_tree", {"TotalEnergy": np.float64, **dict.fromkeys(names, np.float64)})
            t.extend({"TotalEnergy": showers.incident_energy / 1000.0, **{k: cells[:, i] for i, k in enumerate(names)}})
        with uproot.recreate(jag, compression=uproot.ZSTD(1)) as f:
            t = f.mktree("showers", {"incident_energy": np.float32, "voxels": "var * float32"})
            t.extend({"incident_energy": showers.incident_energy, "voxels": ak.Array(list(showers.showers))})

        def raw_flat() -> None:
            for b in uproot.iterate(f"{flat}:fancy_tree", ["TotalEnergy", *names], step_size=100_000, library="np"):
                np.column_stack([b[k] for k in names]).astype(np.float32)

        def raw_jag() -> None:
            for b in uproot.iterate(f"{jag}:showers", ["incident_energy", "voxels"], step_size=100_000, library="ak"):
                ak.to_numpy(ak.flatten(b["voxels"])).reshape(len(b), -1)

        for key, path, raw, kw in (("calogan_flat_cells", flat, raw_flat, {"energy_unit": "GeV"}),
                                   ("jagged_vector", jag, raw_jag, {})):
            t_ours = _best_of(lambda path=path, kw=kw: sum(len(c) for c in io.open_showers(path, **kw).iterate(step_size=100_000)), repeat)
            t_raw = _best_of(raw, repeat)
            out[key] = {"read_ev_per_s_ours": n / t_ours, "read_ev_per_s_raw_uproot": n / t_raw,
                        "read_ratio_ours_over_raw": t_raw / t_ours}
    return out


def run(quick: bool = True) -> dict[str, object]:
    """Return the benchmark numbers (``quick``: smaller samples, fewer repeats)."""
    from simcompress.showers.reference import simulate

    repeat = 2 if quick else 3
    n1 = 20_000 if quick else 100_000
    n2 = 1_000 if quick else 5_000
    out: dict[str, object] = {
        "simulate_ds1_photons": _sim_rate("ds1-photons", n1, "ds1", repeat),
        "simulate_ds2": _sim_rate("ds2", n2, "log-uniform:1e3,1e6", repeat),
    }
    ds1 = simulate("ds1-photons", n1, energies="ds1", seed=2, progress=False)
    out["root_ds1_photons_dense"] = _io_rates(ds1, "dense", repeat)
    del ds1
    ds2 = simulate("ds2", n2, energies="log-uniform:1e3,1e6", seed=3, progress=False)
    out["root_ds2_sparse"] = _io_rates(ds2, "sparse", repeat)
    del ds2
    n3 = 2_000 if quick else 10_000
    out["simulate_calogan"] = _sim_rate("calogan", n3, "log-uniform:1e3,1e5", repeat)
    out["simulate_grid_25"] = _sim_rate("grid-25", n3 // 10, "log-uniform:1e3,1e5", repeat)
    cg = simulate("calogan", 10_000 if quick else 50_000, energies="log-uniform:1e3,1e5", seed=4, progress=False)
    out["foreign_calogan"] = _foreign_rates(cg, repeat)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
