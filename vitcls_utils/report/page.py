"""What a notebook puts on its page: figures shown once, tables styled for the book, values
and sentences glued for the prose, and the run's headline numbers beside the reported ones
(the ``summary`` that the figure page sets beside every other run's)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional

from ..model.registry import get_variant

if TYPE_CHECKING:
    import matplotlib.pyplot as plt
    import pandas as pd

    from .notebook import NotebookRun


def glue(name: str, value, display: bool = True) -> None:
    """myst-nb's ``glue`` (a value the book's prose quotes by name), or nothing where myst-nb
    is not installed (Colab, a plain Jupyter): there the value is only shown when ``display``.

    Args:
        name: the key the book's prose quotes.
        value: anything myst-nb can glue (a number, a DataFrame, Markdown, a Figure).
        display: also show it in the notebook's output.
    Returns:
        None."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show

            show(value)
        return
    myst_glue(name, value, display=display)


def glue_text(name: str, text: str) -> None:
    """A sentence generated from this run's numbers, glued for the page's prose
    (``{glue:md}`name```) and not shown in the notebook's own output.

    Args:
        name: the key the page quotes.
        text: the sentence, Markdown.
    Returns:
        None."""
    from IPython.display import Markdown

    glue(name, Markdown(text), display=False)


def summarize(run: "NotebookRun", values: Dict[str, object],
              units: Optional[Dict[str, str]] = None) -> "pd.DataFrame":
    """This run's headline numbers beside the reported ones, glued as the page's ``summary``
    (the figure page sets every run's summary in one table) and returned for display.

    Args:
        run: the notebook's :class:`NotebookRun`.
        values: {metric: this run's value}. A metric named as in ``data/paper/reported.csv``
            (or a (metric, block) pair for a per-block one) gets the reported value of the
            run's paper model (:func:`~vitcls_utils.report.reported.compared_with`) and an
            agreement phrase; a value may instead be a tuple (this run, reported, the
            reported model's name) for the related papers' numbers.
        units: {metric: unit} shown after the metric's name.

    Returns:
        DataFrame with columns metric, this run, reported, agreement.
    """
    import json

    import pandas as pd

    from . import reported as rep

    rows = []
    for key, value in values.items():
        metric, block = key if isinstance(key, tuple) else (key, None)
        if isinstance(value, tuple):
            ours, theirs, model = value
            agreement = _beside(run, ours, theirs)
        else:
            ours, model = value, rep.compared_with(run.variant, metric)
            theirs = rep.reported_value(metric, run.variant, block)
            agreement = rep.agreement(run.variant, metric, ours, block)
            model = None if model is None else get_variant(model).label
        if run.weights and theirs is not None:
            agreement += "; weights from a file, not the published checkpoint"
        name = METRIC_LABELS.get(metric, metric.replace("_", " "))
        name += f", block {block}" if block is not None else ""
        unit = (units or {}).get(metric)
        rows.append({"metric": f"{name} ({unit})" if unit else name,
                     "value": None if ours is None or ours != ours else float(ours),
                     "reported": None if theirs is None else float(theirs),
                     "reported_model": model, "agreement": agreement})
    glue("summary", _Stored(json.dumps(rows)), display=False)
    glue("agreement_sentence", _Markdown(agreement_sentence(rows, run.label)), display=False)
    return pd.DataFrame([{"metric": r["metric"], "this run": r["value"],
                          "reported": r["reported"] if r["reported"] is None
                          else f"{r['reported']:.2f} ({r['reported_model']})",
                          "agreement": r["agreement"]} for r in rows])


def show(fig: plt.Figure) -> None:
    """Display a figure once in a notebook (and close it, so the inline backend does not
    display it a second time).

    Args:
        fig: the matplotlib Figure.
    Returns:
        None."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(fig)
    plt.close(fig)


#: How metrics are named in tables.
METRIC_LABELS = {
    "identifiability_rate": "identifiability rate (%)",
    "identifiability_rate_image_tokens": "identifiability rate, every image token (%)",
    "images_with_identifiable_token": "images with an identifiable token (%)",
    "top1_accuracy": "top-1 accuracy (%)",
    "first_significant_block": "first block above random (p < 0.05)",
    "perturbation_baseline_accuracy": "top-1, every token kept",
    "perturbation_first_point_accuracy": "top-1 at the curve's first point (B17)",
    "accuracy_kept_removed": "% of tokens removed, top-1 >= the first point",
    "accuracy_kept_removed_unperturbed": "% of tokens removed, top-1 >= unperturbed",
}


def styled(table: pd.DataFrame, precision: int = 2):
    """A table for the book: readable metric names, no index, blanks shown as "–".

    Args:
        table: any DataFrame; a ``metric`` column is renamed through ``METRIC_LABELS``.
        precision: decimals shown.
    Returns:
        A pandas Styler."""
    if "metric" in table:
        table = table.assign(metric=table.metric.map(lambda m: METRIC_LABELS.get(m, m)))
    return table.style.hide(axis="index").format(precision=precision, na_rep="–")


def _beside(run: "NotebookRun", ours: Optional[float], theirs: Optional[float]) -> str:
    """The agreement phrase for a value the notebook sets beside a reported one itself."""
    if theirs is None:
        return "not reported"
    if ours is None or ours != ours:
        return "not computed in this run"
    if run.spec.dataset == "toy":
        return "not comparable: a toy model on synthetic images beside the paper's, shown for scale"
    if run.spec.random:
        return "not comparable: a random-init control beside a trained model"
    return f"differs by {ours - theirs:+.2f}" if abs(ours - theirs) > 1e-9 else "agrees"


class _Stored:
    """A value glued as exactly this text (a notebook output's text/plain), for a reader
    that parses it back: the figure page reads the summary rows as JSON."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": self.text}


def _Markdown(text: str):
    from IPython.display import Markdown

    return Markdown(text)


def agreement_sentence(rows, label: str) -> str:
    """The page's verdict in words, from the numbers: for each headline metric this run's value
    beside the reported one, and whether they agree, differ, or cannot be compared and why.

    Args:
        rows: the summary rows of :func:`summarize` (metric, value, reported, reported_model,
            agreement).
        label: this run's model name.

    Returns:
        One or two sentences of Markdown.
    """
    reported = [r for r in rows if r["reported"] is not None]
    if not reported:
        return f"The paper reports no value of this figure for {label} or a model like it."
    models = sorted({r["reported_model"] for r in reported if r["reported_model"]})
    def here(row) -> str:
        return "–" if row["value"] is None else f"{row['value']:.2f}"

    pairs = "; ".join(f"{r['metric']}: {here(r)} here, {r['reported']:.2f} reported"
                      for r in reported)
    verdicts = {r["agreement"].split(";")[0] for r in reported}
    why = [v[len("not comparable: "):] for v in verdicts if v.startswith("not comparable")]
    if why:
        return (f"Beside the values the paper reports for {', '.join(models)} ({pairs}): not "
                f"comparable, {why[0]}.")
    told = "; ".join(f"{r['metric']} {r['agreement']}" for r in reported)
    return f"Against the values the paper reports for {', '.join(models)} ({pairs}): {told}."
