"""The Grindhammer-Peters (GFlash) parametrisation of electromagnetic showers: materials, profiles, spot counts.

Pure functions of energy and material; :mod:`simcompress.showers.reference` samples
showers from them onto a geometry's voxels.

Physics (constants from Geant4's ``GVFlashHomoShowerTuning.hh`` and
``GFlashSamplingShowerTuning.hh``, algorithms from ``GFlash*ShowerParameterisation.cc``;
G. Grindhammer, S. Peters, hep-ex/0001020):

* material: critical energy ``E_c = 2.66 (X0 Z/A)^1.1`` MeV (X0 in g/cm2), Molière radius
  ``R_M = X0 E_s / E_c``; sampling stacks use the effective quantities of
  ``ComputeZAX0EFFetc`` (:func:`effective_material`);
* longitudinal: per shower a Gamma profile with correlated log-normal fluctuations of the
  depth of maximum T and the shape alpha (:func:`longitudinal_parameters`,
  :func:`sample_longitudinal`), with the sampling corrections ``-0.55/F_s - 0.69 (1-ê)``
  and ``-0.476/F_s``; energy in a depth slice is the difference of the regularised lower
  incomplete gamma function;
* radial: the two-component (core + tail) profile ``f(r) = p 2r R_C^2/(r^2+R_C^2)^2 +
  (1-p) 2r R_T^2/(r^2+R_T^2)^2`` with tau-dependent ``R_C, R_T, p`` (:func:`radial_parameters`),
  uniform azimuth;
* fluctuations: energy is carried by ``N_spot`` equal spots (the spot count follows the
  spot longitudinal profile ``T_s, alpha_s``), and sampling fluctuations
  ``E' ~ Gamma(E/s^2, s^2)`` with stochastic term ``s = 11 %/sqrt(E/GeV)`` (the documented
  intent; Geant4's code applies 0.11 in MeV units, which makes the term 30 times smaller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from .._config import StrictModel
from .geometry import Material, Medium

__all__ = [
    "ALPHA_MIN",
    "ES_HOMOGENEOUS_MEV",
    "ES_SAMPLING_MEV",
    "HOMO",
    "PHOTON_CONVERSION_X0",
    "SAMPLING",
    "SIGMA_MAX",
    "T_MIN",
    "EffectiveMaterial",
    "GFlashConfig",
    "critical_energy_mev",
    "effective_material",
    "longitudinal_parameters",
    "moliere_radius_mm",
    "n_spots",
    "radial_parameters",
    "sample_longitudinal",
]

# ----------------------------------------------------------------------------- constants
# Homogeneous media (GVFlashHomoShowerTuning.hh).
ES_HOMOGENEOUS_MEV = 21.0
ES_SAMPLING_MEV = 21.2
HOMO = {
    "t1": -0.812,  # <ln T> = ln(ln y + t1)
    "a1": 0.81, "a2": 0.458, "a3": 2.26,  # <ln a> = ln(a1 + (a2 + a3/Z) ln y)
    "sig_t1": -1.4, "sig_t2": 1.26,  # sigma(ln T) = 1/(s1 + s2 ln y)
    "sig_a1": -0.58, "sig_a2": 0.86,
    "rho1": 0.705, "rho2": -0.023,
    "rc1": 0.0251, "rc2": 0.00319, "rc3": 0.1162, "rc4": -0.000381,
    "rt1": 0.659, "rt2": -0.00309, "rt3": 0.645, "rt4": -2.59, "rt5": 0.3585, "rt6": 0.0412,
    "wc1": 2.632, "wc2": -0.00094, "wc3": 0.401, "wc4": 0.00187, "wc5": 1.313, "wc6": -0.0686,
    "spot_n1": 93.0, "spot_n2": 0.876,  # N_spot = 93 ln Z (E/GeV)^0.876
    "spot_t1": 0.698, "spot_t2": 0.00212,
    "spot_a1": 0.639, "spot_a2": 0.00334,
}
# Sampling calorimeters (GFlashSamplingShowerTuning.hh).
SAMPLING = {
    "t_fs": -0.55, "t_ehat": -0.69, "a_fs": -0.476,
    "sig_t1": -2.5, "sig_t2": 1.25,
    "sig_a1": -0.82, "sig_a2": 0.79,
    "rho1": 0.784, "rho2": -0.023,
    "rc_ehat": -0.0203, "rc_fs": 0.0397,
    "rt_ehat": -0.14, "rt_fs": -0.495,
    "wc_ehat": 0.348, "wc_fs": -0.642,
    "spot_n1": 10.3, "spot_n2": 0.959, "sigma_samp": 0.11,  # N_spot = 10.3/0.11 (E/GeV)^0.959 (code)
}
#: mean free path of a high-energy photon before converting, in X0 (9/7).
PHOTON_CONVERSION_X0 = 9.0 / 7.0
SIGMA_MAX = 0.5
T_MIN = 1.0
ALPHA_MIN = 1.1


class GFlashConfig(StrictModel):
    """Options of the reference simulator (all have physics defaults).

    Attributes:
        step_x0: longitudinal step inside a readout layer (X0); Geant4 uses 0.1.
        sampling_term: stochastic term of the sampling fluctuations (fraction at 1 GeV);
            ``None`` = 0.11 for sampling calorimeters, 0 (none) for homogeneous ones.
        spot_scale: multiply the GFlash number of spots (1 = the parametrisation).
        max_spots: cap on the spots of one shower (``None`` = no cap; the multinomial
            placement costs the same for any number of spots, so no cap is needed for speed).
        fluctuations: per-shower fluctuations of ln T and ln alpha (False = mean profile).
        photon_conversion: start each shower at an exponentially distributed depth with mean
            9/7 X0 (the photon conversion length). Off by default, as in Geant4's GFlash,
            which treats photons like electrons; turn it on for more realistic photon showers.
    """

    step_x0: float = Field(0.5, gt=0.0, le=5.0)
    sampling_term: float | None = Field(None, ge=0.0, le=1.0)
    spot_scale: float = Field(1.0, gt=0.0)
    max_spots: int | None = Field(None, ge=1)
    fluctuations: bool = True
    photon_conversion: bool = False


# ----------------------------------------------------------------------------- materials
def critical_energy_mev(medium: Medium) -> float:
    """Critical energy ``E_c = 2.66 (X0 Z/A)^1.1`` MeV with X0 in g/cm2 (W: 8.00 MeV, Si: 36.7 MeV)."""
    x0_gcm2 = medium.x0_mm / 10.0 * medium.density
    return 2.66 * (x0_gcm2 * medium.Z / medium.A) ** 1.1


def moliere_radius_mm(medium: Medium, es_mev: float = ES_SAMPLING_MEV) -> float:
    """Molière radius ``R_M = X0 E_s / E_c`` in mm (W: 9.28 mm with ``E_s = 21.2`` MeV)."""
    return medium.x0_mm * es_mev / critical_energy_mev(medium)


@dataclass(frozen=True)
class EffectiveMaterial:
    """The quantities GFlash needs (effective ones for a sampling stack).

    Attributes:
        kind: ``homogeneous`` or ``sampling``.
        Z, A: (effective) atomic and mass numbers.
        density: (effective) density, g/cm3.
        x0_mm: (effective) radiation length, mm.
        ec_mev: (effective) critical energy, MeV.
        rm_mm: (effective) Molière radius, mm.
        w_absorber: mass fraction of the absorber (1 for homogeneous).
        fs: ``F_s = X0_eff / (d_absorber + d_active)`` (``inf`` for homogeneous).
        ehat: ``ê = 1/(1 + 0.007 (Z_absorber - Z_active))`` (1 for homogeneous).
    """

    kind: str
    Z: float
    A: float
    density: float
    x0_mm: float
    ec_mev: float
    rm_mm: float
    w_absorber: float = 1.0
    fs: float = math.inf
    ehat: float = 1.0

    @property
    def is_sampling(self) -> bool:
        return self.kind == "sampling"


def effective_material(material: Material) -> EffectiveMaterial:
    """Effective quantities of a material (GFlash ``ComputeZAX0EFFetc`` for sampling stacks).

    For W(1.4 mm)/Si(0.3 mm): w_W = 0.975, Z_eff = 72.5, rho_eff = 16.3 g/cm3, X0_eff = 4.22 mm,
    R_M,eff = 9.48 mm, E_c,eff = 9.44 MeV, F_s = 2.48, ê = 0.704.
    """
    if material.kind == "homogeneous" or material.active is None:
        m = material.absorber
        ec = critical_energy_mev(m)
        return EffectiveMaterial("homogeneous", m.Z, m.A, m.density, m.x0_mm, ec, m.x0_mm * ES_HOMOGENEOUS_MEV / ec)
    media = (material.absorber, material.active)
    d = np.array([material.absorber_mm, material.active_mm], dtype=np.float64)
    rho = np.array([m.density for m in media])
    w = d * rho / np.sum(d * rho)
    z_eff = float(np.sum(w * [m.Z for m in media]))
    a_eff = float(np.sum(w * [m.A for m in media]))
    rho_eff = float(np.sum(d * rho) / np.sum(d))
    x0 = np.array([m.x0_mm for m in media])
    x0_eff = float(1.0 / np.sum(w * rho_eff / (x0 * rho)))
    ec_media = np.array([critical_energy_mev(m) for m in media])
    s = float(np.sum(w * ec_media / x0))
    return EffectiveMaterial(
        kind="sampling",
        Z=z_eff,
        A=a_eff,
        density=rho_eff,
        x0_mm=x0_eff,
        ec_mev=x0_eff * s,
        rm_mm=ES_SAMPLING_MEV / s,
        w_absorber=float(w[0]),
        fs=x0_eff / float(np.sum(d)),
        ehat=1.0 / (1.0 + 0.007 * (material.absorber.Z - material.active.Z)),
    )


# ----------------------------------------------------------------------------- profiles
def _sigma(c1: float, c2: float, lny: np.ndarray) -> np.ndarray:
    # Geant4: min(0.5, 1/(c1 + c2 ln y)); a non-positive denominator (very low E) also gives 0.5.
    den = c1 + c2 * lny
    return np.where(den > 1.0 / SIGMA_MAX, 1.0 / np.maximum(den, 1.0 / SIGMA_MAX), SIGMA_MAX)


def longitudinal_parameters(energy_mev: np.ndarray | float, eff: EffectiveMaterial) -> dict[str, np.ndarray]:
    """Mean longitudinal parameters at incident energy ``energy_mev`` (vectorised).

    Returns a dict of arrays: ``mean_ln_t``, ``mean_ln_alpha``, ``t_max`` (= exp<ln T>, X0),
    ``alpha`` (= exp<ln alpha>), ``beta`` (= (alpha-1)/T), ``sigma_ln_t``, ``sigma_ln_alpha``, ``rho``.
    For homogeneous W at 1 GeV: T = 4.02, alpha = 3.17, beta = 0.540, sigmas 0.214 / 0.280, rho 0.594.
    """
    e = np.asarray(energy_mev, dtype=np.float64)
    lny = np.log(e / eff.ec_mev)
    mean_ln_t = np.log(np.maximum(lny + HOMO["t1"], 0.1))
    mean_ln_a = np.log(np.maximum(HOMO["a1"] + (HOMO["a2"] + HOMO["a3"] / eff.Z) * lny, 0.1))
    if eff.is_sampling:
        mean_ln_t = np.maximum(
            0.1, np.log(np.maximum(np.exp(mean_ln_t) + SAMPLING["t_fs"] / eff.fs + SAMPLING["t_ehat"] * (1 - eff.ehat), 1e-3))
        )
        mean_ln_a = np.maximum(0.1, np.log(np.maximum(np.exp(mean_ln_a) + SAMPLING["a_fs"] / eff.fs, 1e-3)))
        c = SAMPLING
    else:
        c = HOMO
    sig_t = _sigma(c["sig_t1"], c["sig_t2"], lny)
    sig_a = _sigma(c["sig_a1"], c["sig_a2"], lny)
    rho = np.clip(c["rho1"] + c["rho2"] * lny, -1.0, 1.0)
    t_max = np.exp(mean_ln_t)
    alpha = np.exp(mean_ln_a)
    return {
        "mean_ln_t": mean_ln_t,
        "mean_ln_alpha": mean_ln_a,
        "t_max": t_max,
        "alpha": alpha,
        "beta": (alpha - 1.0) / t_max,
        "sigma_ln_t": sig_t,
        "sigma_ln_alpha": sig_a,
        "rho": rho,
    }


def sample_longitudinal(
    energy_mev: np.ndarray, eff: EffectiveMaterial, rng: np.random.Generator, fluctuations: bool = True
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per-shower ``(T, alpha)`` with correlated log-normal fluctuations; also returns the means.

    ``ln T = <ln T> + s_T (sqrt((1+rho)/2) z1 + sqrt((1-rho)/2) z2)`` and
    ``ln a = <ln a> + s_a (sqrt((1+rho)/2) z1 - sqrt((1-rho)/2) z2)``; clamped to T >= 1, alpha >= 1.1.
    """
    p = longitudinal_parameters(energy_mev, eff)
    n = len(np.atleast_1d(energy_mev))
    z = rng.standard_normal((2, n))
    if not fluctuations:
        z[:] = 0.0
    cp = np.sqrt((1.0 + p["rho"]) / 2.0)
    cm = np.sqrt((1.0 - p["rho"]) / 2.0)
    ln_t = p["mean_ln_t"] + p["sigma_ln_t"] * (cp * z[0] + cm * z[1])
    ln_a = p["mean_ln_alpha"] + p["sigma_ln_alpha"] * (cp * z[0] - cm * z[1])
    return np.maximum(np.exp(ln_t), T_MIN), np.maximum(np.exp(ln_a), ALPHA_MIN), p


def radial_parameters(
    energy_mev: np.ndarray, tau: np.ndarray, eff: EffectiveMaterial
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Core radius, tail radius (both in Molière radii) and core weight at reduced depth ``tau``.

    ``energy_mev`` broadcasts against ``tau``. Sampling stacks get the GFlash corrections in
    ``(1 - ê)`` and ``1/F_s``. Radii are kept >= 1e-3 R_M and the weight in [0, 1].
    """
    e_gev = np.asarray(energy_mev, dtype=np.float64) / 1000.0
    lne = np.log(e_gev)
    z = eff.Z
    h = HOMO
    rc = (h["rc1"] + h["rc2"] * lne) + (h["rc3"] + h["rc4"] * z) * tau
    k1 = h["rt1"] + h["rt2"] * z
    k4 = h["rt5"] + h["rt6"] * lne
    rt = k1 * (np.exp(h["rt4"] * (tau - h["rt3"])) + np.exp(k4 * (tau - h["rt3"])))
    p1 = h["wc1"] + h["wc2"] * z
    p2 = h["wc3"] + h["wc4"] * z
    p3 = h["wc5"] + h["wc6"] * lne
    x = (p2 - tau) / p3
    wc = p1 * np.exp(x - np.exp(x))
    if eff.is_sampling:
        s = SAMPLING
        one_m_e = 1.0 - eff.ehat
        rc = rc + s["rc_ehat"] * one_m_e + s["rc_fs"] / eff.fs * np.exp(-tau)
        rt = rt + s["rt_ehat"] * one_m_e + s["rt_fs"] / eff.fs * np.exp(-tau)
        wc = wc + one_m_e * (s["wc_ehat"] + s["wc_fs"] / eff.fs * np.exp(-((tau - 1.0) ** 2)))
    return np.maximum(rc, 1e-3), np.maximum(rt, 1e-3), np.clip(wc, 0.0, 1.0)


def n_spots(energy_mev: np.ndarray | float, eff: EffectiveMaterial) -> np.ndarray:
    """Mean number of energy spots of a shower (GFlash; sampling: ``10.3/0.11 (E/GeV)^0.959``)."""
    e_gev = np.asarray(energy_mev, dtype=np.float64) / 1000.0
    if eff.is_sampling:
        return SAMPLING["spot_n1"] / SAMPLING["sigma_samp"] * e_gev ** SAMPLING["spot_n2"]
    return HOMO["spot_n1"] * math.log(eff.Z) * e_gev ** HOMO["spot_n2"]
