"""Chapter 4's faithfulness suite on the page (catalogue E17): every criterion of every map
with its 95% interval over images, the paired difference from the random map with its interval
and Wilcoxon p, the randomisation check's similarities, the curves with their bands, and the
verdict in words, generated from whether each interval excludes zero."""
from __future__ import annotations

from typing import Dict, Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis.faithfulness_suite import BETTER
from ..analysis.randomisation_check import PASS_BELOW, mprt_verdict
from ..base.uncertainty import bootstrap, bootstrap_columns, paired_difference
from .style import HEIGHT, legend_below, palette, subplots
from .vilas_figures import METHOD_LABELS

CURVES = ("MoRF", "LeRF", "deletion", "insertion", "ROAD MoRF", "ROAD LeRF")


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def suite_table(scores: pd.DataFrame, against: str = "random", seed: int = 0) -> pd.DataFrame:
    """Per method and criterion, the mean over images with its 95% interval, and the paired
    difference from ``against``'s map on the same images.

    Args:
        scores: :func:`~vitcls_utils.analysis.faithfulness_suite.faithfulness_suite`'s scores
            (method, criterion, image, value).
        against: the map every other one is compared with (the random map).
        seed: the bootstrap's seed.

    Returns:
        DataFrame: ``method``, ``criterion``, ``faithful is`` (lower/higher), ``mean [95% CI]``,
        ``difference from random [95% CI]``, ``p (Wilcoxon)``, ``excluded`` (non-finite images
        left out), ``verdict`` ("more faithful than random" when the difference's interval
        excludes zero on the faithful side, "less faithful than random" on the other side,
        "not resolved" when it holds zero) and the numbers ``mean``, ``difference``,
        ``difference low``, ``difference high``.
    """
    rows = []
    for (method, criterion), group in scores.groupby(["method", "criterion"], sort=False):
        ours = group.sort_values("image").value.to_numpy()
        mean = bootstrap(ours, seed=seed)
        row = {"method": _label(method), "criterion": criterion,
               "faithful is": BETTER[criterion], "mean [95% CI]": mean.format(3),
               "difference from random [95% CI]": "–", "p (Wilcoxon)": np.nan,
               "excluded": mean.excluded, "verdict": "–", "mean": mean.estimate,
               "difference": np.nan, "difference low": np.nan, "difference high": np.nan}
        if method != against:
            base = scores[(scores.method == against) & (scores.criterion == criterion)]
            diff = paired_difference(ours, base.sort_values("image").value.to_numpy(),
                                     seed=seed)
            sign = 1 if BETTER[criterion] == "higher" else -1
            verdict = ("not resolved" if not diff.excludes_zero else
                       "more faithful than random" if sign * diff.estimate > 0 else
                       "less faithful than random")
            row.update({"difference from random [95% CI]": diff.format(3),
                        "p (Wilcoxon)": diff.p_value, "verdict": verdict,
                        "excluded": max(mean.excluded, diff.excluded),
                        "difference": diff.estimate, "difference low": diff.low,
                        "difference high": diff.high})
        rows.append(row)
    return pd.DataFrame(rows)


def mprt_table(results: Dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """The randomisation check per method and mode: similarity to the original map once every
    layer is randomised (cascading) or the last layer tried (independent), with its interval.

    Args:
        results: {(method, mode) or method: :func:`~vitcls_utils.analysis.randomisation_check.mprt`
            frame}.
        seed: the bootstrap's seed.

    Returns:
        DataFrame: ``method``, ``mode``, ``Spearman [95% CI]``, ``SSIM [95% CI]``, ``excluded``
        (maps without a ranking), ``passes`` (the Spearman interval below the threshold).
    """
    rows = []
    for key, frame in results.items():
        method, mode = key if isinstance(key, tuple) else (key, "cascading")
        rank, structure = (mprt_verdict(frame, measure, seed) for measure in ("spearman",
                                                                               "ssim"))
        rows.append({"method": _label(method), "mode": mode,
                     "Spearman [95% CI]": rank["interval"].format(3),
                     "SSIM [95% CI]": structure["interval"].format(3),
                     "excluded": rank["interval"].excluded,
                     "passes": "yes" if rank["passes"] else "no"})
    return pd.DataFrame(rows)


def suite_verdict(table: pd.DataFrame, mprt: Optional[pd.DataFrame] = None,
                  method: str = "class_space") -> str:
    """The verdict on one map in words, from :func:`suite_table` (and :func:`mprt_table`).

    Args:
        table: :func:`suite_table`'s frame; mprt: :func:`mprt_table`'s, or None.
        method: the map judged (a method key).

    Returns:
        A sentence or two of Markdown: by which criteria the map is more faithful than the
        random map (the 95% interval of the paired difference excludes zero), by which less,
        which are not resolved, and whether it passes the randomisation check.
    """
    name = _label(method)
    rows = table[table.method == name]
    if rows.empty:
        return f"The suite did not run on the {name} map."
    phrases = {"more faithful than random": "more faithful than the random map",
               "less faithful than random": "less faithful than the random map",
               "not resolved": "not distinguishable from the random map"}
    groups = {v: rows[rows.verdict == v].criterion.tolist() for v in phrases}
    said = [f"{phrases[v]} by {', '.join(c)}" for v, c in groups.items() if c]
    sentence = (f"By the suite's {len(rows)} criteria, the {name} map is " + "; ".join(said)
                + " (a verdict is given only where the 95% interval of the paired difference "
                "from the random map excludes zero).")
    if mprt is not None and not mprt[mprt.method == name].empty:
        cascading = mprt[(mprt.method == name) & (mprt["mode"] == "cascading")]
        row = (cascading if not cascading.empty else mprt[mprt.method == name]).iloc[0]
        sentence += (f" Under randomisation of every layer its maps keep a Spearman similarity "
                     f"of {row['Spearman [95% CI]']} to the originals: it "
                     + ("passes" if row.passes == "yes" else "fails")
                     + f" the sanity check (interval below {PASS_BELOW:g}).")
    return sentence


def suite_figure(curves: pd.DataFrame, title: str = "", seed: int = 0) -> plt.Figure:
    """The suite's curves: target probability against the fraction of tokens removed (or
    inserted), a panel per curve, a line per method with its 95% band over images.

    Args:
        curves: :func:`~vitcls_utils.analysis.faithfulness_suite.faithfulness_suite`'s curves
            (method, curve, fraction, image, probability).
        title: the figure's title; seed: the bands' bootstrap seed.

    Returns:
        A Figure with six panels (2 x 3), the legend below.
    """
    fig, axes = subplots(2, 3, sharey=True, height=1.7 * HEIGHT)
    colours = palette([_label(m) for m in curves.method.unique()])
    for ax, name in zip(axes.ravel(), CURVES, strict=True):
        for method, part in curves[curves.curve == name].groupby("method", sort=False):
            wide = part.pivot(index="image", columns="fraction", values="probability")
            mean, low, high = bootstrap_columns(wide.to_numpy(), seed=seed)
            x = 100 * wide.columns.to_numpy(dtype=float)
            colour = colours[_label(method)]
            ax.plot(x, mean, color=colour, label=_label(method))
            ax.fill_between(x, low, high, color=colour, alpha=0.2, linewidth=0)
        verb = "inserted" if name == "insertion" else "removed"
        ax.set(title=name, xlabel=f"image tokens {verb} (%)",
               ylabel="target probability")
    fig.suptitle(title)
    legend_below(fig, axes.ravel(), title="")
    return fig


def mprt_figure(results: Dict[str, pd.DataFrame], title: str = "", seed: int = 0
                ) -> plt.Figure:
    """Cascading randomisation: each map's Spearman similarity to the original as layers are
    randomised from the top, with 95% bands over images.

    Args:
        results: {method: cascading :func:`~vitcls_utils.analysis.randomisation_check.mprt`
            frame}; title: the axes' title; seed: the bands' bootstrap seed.

    Returns:
        A Figure with one axes, the legend below.
    """
    fig, ax = subplots(1, 1)
    colours = palette([_label(m) for m in results])
    for method, frame in results.items():
        wide = frame.pivot(index="image", columns="step", values="spearman")
        mean, low, high = bootstrap_columns(wide.to_numpy(), seed=seed)
        steps = wide.columns.to_numpy()
        ax.plot(steps, mean, marker="o", color=colours[_label(method)], label=_label(method))
        ax.fill_between(steps, low, high, color=colours[_label(method)], alpha=0.2, linewidth=0)
        layers = frame.drop_duplicates("step").sort_values("step").layer.tolist()
    ax.set_xticks(steps, [f"+{layer}" for layer in layers], rotation=45, ha="right")
    ax.axhline(PASS_BELOW, color="0.3", linestyle=":", linewidth=1)
    ax.set(title=title, xlabel="layers randomised, cumulatively from the top",
           ylabel="Spearman similarity to\nthe original map", ylim=(-1.02, 1.02))
    legend_below(fig, [ax], title="")
    return fig
