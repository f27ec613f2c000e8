"""Agreement of a model's per-patient totals with the reference's: Bland-Altman bias and limits, Spearman.

For pairs (p_i, r_i) of prediction and reference (one per patient), d_i = p_i - r_i:

* mean bias = mean(d); sd = sample standard deviation of d (n - 1);
* 95 % limits of agreement = bias -/+ 1.96 sd (Bland & Altman 1986);
* Spearman's rho between p and r (scipy.stats.spearmanr, ties get average ranks) and its two-sided p.

Bias needs n >= 1, limits n >= 2, Spearman n >= 3 and both series non-constant; otherwise None.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

LOA_Z = 1.96


def agreement(pred: list[float], ref: list[float]) -> dict[str, Any]:
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if p.shape != r.shape:
        raise ValueError(f"{p.size} predictions for {r.size} references")
    n = int(p.size)
    d = p - r
    out: dict[str, Any] = {
        "n": n,
        "mean_bias": float(d.mean()) if n >= 1 else None,
        "sd_difference": None,
        "loa_low": None,
        "loa_high": None,
        "spearman_rho": None,
        "spearman_p": None,
    }
    if n >= 2:
        sd = float(d.std(ddof=1))
        bias = out["mean_bias"]
        out.update(sd_difference=sd, loa_low=bias - LOA_Z * sd, loa_high=bias + LOA_Z * sd)
    if n >= 3 and np.ptp(p) > 0 and np.ptp(r) > 0:
        rho, pvalue = stats.spearmanr(p, r)
        if math.isfinite(rho):
            out.update(spearman_rho=float(rho), spearman_p=float(pvalue))
    return out
