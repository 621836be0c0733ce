"""Per-energy mean response and resolution of a generator bundle on large samples at fixed energies.

Not a timed bench (``bench/__main__`` runs only ``bench_*.py``): the check behind the shipped flow
card's ``validation_100k.per_energy_large_samples``. At the lowest ds1 energies the resolution is
15-22 %, so the ~6,700 showers per energy of a 100k held-out sample leave a statistical error of
about 0.4 % on the generated-minus-reference mean response; this measures it with 200,000
reference and 60,000 generated showers per energy (1-sigma statistical errors printed).

    python bench/response_check.py ds1-photons-flow 256 512
"""

import sys
import time

import numpy as np
import torch

from simcompress.generators import load_generator
from simcompress.showers.reference import simulate

bundle, energies = sys.argv[1], [float(v) for v in sys.argv[2:]]
torch.set_num_threads(2)
gen = load_generator(bundle)
for energy in energies:
    ref = simulate(gen.geometry, 200_000, energies=f"fixed:{energy}", seed=77, progress=False)
    r = ref.showers.sum(1) / ref.incident_energy
    t0 = time.time()
    with torch.no_grad():
        x = gen.sample(torch.full((60_000,), energy), torch.Generator().manual_seed(5), batch_size=2000).numpy()
    rg = x.sum(1) / energy
    dev = 100 * (rg.mean() / r.mean() - 1)
    err = 100 * np.hypot(r.std() / np.sqrt(len(r)), rg.std() / np.sqrt(len(rg))) / r.mean()
    res_dev = 100 * (rg.std() / rg.mean() / (r.std() / r.mean()) - 1)
    print(f"{energy:g} MeV: mean response {dev:+.3f} % +- {err:.3f} %, resolution {res_dev:+.2f} % ({time.time() - t0:.0f} s)", flush=True)
