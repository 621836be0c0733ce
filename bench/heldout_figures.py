"""Held-out figures of a generator bundle, in the zoo card's ``validation_100k`` format.

Not a timed bench (``bench/__main__`` runs only ``bench_*.py``): the script behind the shipped
cards' ``validation_100k`` figures.

    simcompress simulate --geometry ds1-photons --events 100000 --seed 2026 --energies ds1 --out heldout.root
    simcompress simulate --geometry ds1-photons --events 100000 --seed 2027 --energies ds1 --out heldout2.root
    python bench/heldout_figures.py ds1-photons-flow heldout.root flow-100k.json [gate] [calochallenge] [--floor heldout2.root]

The FPD floor is measured exactly as the candidate's FPD: the same estimator settings (JetNet's
extrapolation over batches of 20,000 to 50,000) on a second, independent reference sample of the
same size (``--floor``). Without ``--floor`` it falls back to the two halves of the reference with
the same settings (smaller samples: a larger floor). Until 2026-12-07 the floor used batches of
10,000 to 50,000 on the halves while the candidate used 20,000 to 50,000; on the same pair of 100k
GFlash samples the two settings give 0.16e-3 and 0.38e-3, so that floor was not comparable.
"""

import json
import sys
import time

import numpy as np
import torch

from simcompress.generators import load_generator
from simcompress.generators.fidelity import compare_response
from simcompress.showers import ShowerSet
from simcompress.showers.io import open_showers
from simcompress.validation.classifier import classifier_test, low_level_inputs
from simcompress.validation.features import compute_features, high_level_vector
from simcompress.validation.metrics import feature_binning, fpd, histogram_separation_power

args = sys.argv[1:]
floor_file = None
if "--floor" in args:
    i = args.index("--floor")
    if i + 1 >= len(args):
        sys.exit("heldout_figures.py: --floor needs a file (a second, independent reference sample)")
    floor_file = args[i + 1]
    del args[i : i + 2]
bundle, heldout, out = args[0], args[1], args[2]
presets = args[3:] or ["gate"]
torch.set_num_threads(2)
gen = load_generator(bundle)
ref = open_showers(heldout).read()
e = torch.as_tensor(ref.incident_energy, dtype=torch.float32)
t0 = time.time()
with torch.no_grad():
    x = gen.sample(e, torch.Generator().manual_seed(11), batch_size=2000).numpy()
t_sample = time.time() - t0
print(f"sampled {len(x)} in {t_sample:.0f} s", flush=True)
cand = ShowerSet(ref.incident_energy, x, ref.geometry)
fr, fc = compute_features(ref), compute_features(cand)
half = len(ref) // 2
fa, fb = compute_features(ref[np.arange(half)]), compute_features(ref[np.arange(half, 2 * half)])
sp, floor = {}, {}
for i, name in enumerate(fr.names):
    a, b = fr.values[:, i].astype(np.float64), fc.values[:, i].astype(np.float64)
    sp[name] = round(float(histogram_separation_power(a, b, feature_binning(a, [b]))), 5)
    a1, a2 = fa.values[:, i].astype(np.float64), fb.values[:, i].astype(np.float64)
    floor[name] = round(float(histogram_separation_power(a1, a2, feature_binning(a1, [a2]))), 5)
worst = max(sp, key=sp.get)
print("worst", worst, sp[worst], flush=True)
hr, hc = high_level_vector(fr), high_level_vector(fc)
f_val, f_err = fpd(hr, hc)
# the same comparison with JetNet's extrapolation over 10,000 to 50,000 (both sides alike): a second consistent pairing
f10 = fpd(hr, hc, min_samples=10_000, max_samples=50_000)
if floor_file is not None:
    h2 = high_level_vector(compute_features(open_showers(floor_file).read()))
    f_floor, f_floor_err = fpd(hr, h2)
    f10_floor = fpd(hr, h2, min_samples=10_000, max_samples=50_000)
    floor_what = f"FPD of the reference against {floor_file} (an independent sample), the candidate's settings"
else:
    f_floor, f_floor_err = fpd(high_level_vector(fa), high_level_vector(fb))
    f10_floor = fpd(high_level_vector(fa), high_level_vector(fb), min_samples=10_000, max_samples=half)
    floor_what = "FPD of the reference's two halves, the candidate's settings"
res = {
    "n_reference": len(ref), "n_generated": len(x),
    "commands": [
        "simcompress simulate --geometry ds1-photons --events 100000 --seed 2026 --energies ds1 --out heldout.root",
        "simcompress simulate --geometry ds1-photons --events 100000 --seed 2027 --energies ds1 --out heldout2.root",
        ("python bench/heldout_figures.py BUNDLE heldout.root OUT.json gate --floor heldout2.root: sample the bundle at the held-out sample's incident energies (torch seed 11), "
        "CaloChallenge separation power per high-level feature (50 quantile bins of the reference; floor: the two halves of the "
        "reference), FPD (JetNet extrapolation, batches of 20,000-50,000; its floor: the same FPD of the reference against "
        "heldout2.root) of the high-level vector, simcompress.validation.classifier.classifier_test "
        "on the high-level vector and on the low-level [log10 E_inc, voxels / E_inc]"),
    ],
    "separation_power": sp, "separation_power_ref_vs_ref_halves": floor,
    "max_separation_power": sp[worst], "worst_feature": worst,
    "fpd_x1e3": round(1e3 * f_val, 4), "fpd_err_x1e3": round(1e3 * f_err, 4), "fpd_floor_x1e3": round(1e3 * f_floor, 4),
    "fpd_floor_err_x1e3": round(1e3 * f_floor_err, 4), "fpd_floor": floor_what,
    "fpd_10k_50k_x1e3": [round(1e3 * f10[0], 4), round(1e3 * f10[1], 4)],
    "fpd_floor_10k_50k_x1e3": [round(1e3 * f10_floor[0], 4), round(1e3 * f10_floor[1], 4)],
    "sampling_seconds": round(t_sample, 1),
}
fid = compare_response(ref.incident_energy, ref.showers, ref.incident_energy, x, ref.geometry.layer_offsets)
res["per_energy"] = {
    "energy_mev": fid["energy_mev"], "mean_response_dev_pct": fid["mean_response_dev_pct"],
    "max_abs_mean_dev_pct": round(fid["max_abs_mean_dev_pct"], 3), "max_abs_resolution_dev_pct": round(fid["max_abs_resolution_dev_pct"], 2),
}
print("response", res["per_energy"]["max_abs_mean_dev_pct"], "resolution", res["per_energy"]["max_abs_resolution_dev_pct"], flush=True)
for preset in presets:
    for level, (a, b) in {"high": (hr, hc), "low": (low_level_inputs(ref.incident_energy, ref.showers), low_level_inputs(ref.incident_energy, x))}.items():
        t1 = time.time()
        r = classifier_test(a, b, preset=preset, seed=0, progress=False)
        res[f"classifier_auc_{level}" + ("" if preset == "gate" else f"_{preset}")] = round(float(r.auc), 4)
        res.setdefault("classifier_settings", {})[preset] = r.settings
        print(preset, level, "AUC", round(float(r.auc), 4), f"{time.time() - t1:.0f} s", flush=True)
with open(out, "w") as fh:
    json.dump(res, fh, indent=1, default=str)
