"""Bland-Altman and scatter plots of per-patient totals (prediction vs reference) as PNG bytes.

matplotlib's object API (``Figure`` + the Agg canvas) is used, not ``pyplot``: no global state and no
display backend, so it runs in worker processes and on headless machines. MTV and TLG span orders of
magnitude, so the scatter plot has log axes and the Bland-Altman plot a log x axis (the mean of the two);
values that a log axis cannot show (zero) are left out of the picture and counted in its title.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# name -> (prediction values, reference values, unit)
Series = dict[str, tuple[list[float], list[float], str]]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def _log_axis(axis) -> None:
    """Log scale labelled at 1, 2, 5 x 10^k in plain numbers (no crowded minor-tick labels)."""
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _omitted(n_left_out: int) -> str:
    return f"; {n_left_out} with a zero value not shown" if n_left_out else ""


def bland_altman_png(series: Series, stats: dict[str, dict], model: str) -> bytes:
    """One panel per quantity: difference (prediction - reference) against the mean of the two."""
    fig = Figure(figsize=(5.2 * len(series), 4.4), dpi=110, layout="constrained")
    for i, (name, (pred, ref, unit)) in enumerate(series.items(), start=1):
        ax = fig.add_subplot(1, len(series), i)
        p, r = np.asarray(pred, float), np.asarray(ref, float)
        mean, diff = (p + r) / 2, p - r
        shown = mean > 0
        ax.scatter(mean[shown], diff[shown], s=18, color="tab:blue", alpha=0.8)
        s = stats[name]
        if s["mean_bias"] is not None:
            ax.axhline(s["mean_bias"], color="black", lw=1, label=f"bias {s['mean_bias']:.3g} {unit}")
        if s["loa_low"] is not None:
            ax.axhline(s["loa_low"], color="tab:red", ls="--", lw=1, label=f"95% LoA {s['loa_low']:.3g}")
            ax.axhline(s["loa_high"], color="tab:red", ls="--", lw=1, label=f"95% LoA {s['loa_high']:.3g}")
        if shown.any():
            ax.set_xscale("log")
            _log_axis(ax.xaxis)
        ax.set_xlabel(f"mean of prediction and reference {name} ({unit}, log scale)")
        ax.set_ylabel(f"prediction - reference {name} ({unit})")
        ax.set_title(f"{model}: {name}, n = {len(p)} patients{_omitted(int((~shown).sum()))}", fontsize=9)
        ax.legend(fontsize=8, loc="best")
        ax.grid(True, alpha=0.3)
    return _png(fig)


def scatter_png(series: Series, stats: dict[str, dict], model: str) -> bytes:
    """One panel per quantity: prediction against reference on log axes, with the identity line."""
    fig = Figure(figsize=(4.8 * len(series), 4.6), dpi=110, layout="constrained")
    for i, (name, (pred, ref, unit)) in enumerate(series.items(), start=1):
        ax = fig.add_subplot(1, len(series), i)
        p, r = np.asarray(pred, float), np.asarray(ref, float)
        shown = (p > 0) & (r > 0)
        ax.scatter(r[shown], p[shown], s=18, color="tab:blue", alpha=0.8)
        if shown.any():
            lo = float(min(r[shown].min(), p[shown].min())) / 1.5
            hi = float(max(r[shown].max(), p[shown].max())) * 1.5
            ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls=":", label="identity")
            ax.set_xscale("log")
            ax.set_yscale("log")
            _log_axis(ax.xaxis)
            _log_axis(ax.yaxis)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.legend(fontsize=8, loc="upper left")
        rho = stats[name]["spearman_rho"]
        rho_text = "n/a" if rho is None else f"{rho:.3f}"
        ax.set_xlabel(f"reference {name} ({unit}, log scale)")
        ax.set_ylabel(f"prediction {name} ({unit}, log scale)")
        ax.set_title(
            f"{model}: {name}, n = {len(p)} patients, Spearman {rho_text}{_omitted(int((~shown).sum()))}",
            fontsize=9,
        )
        ax.grid(True, which="both", alpha=0.3)
    return _png(fig)
