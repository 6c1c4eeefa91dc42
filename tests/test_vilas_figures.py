"""The main paper's figures: reproducible to the pixel (confidence bands and jitter are seeded),
sized for the book's text column with no text under 9 px as displayed, legends off the data, a
colour bar on every map, the right labels, and the paper's values as their own labelled series.

The checks (``readable``, ``legends_off_the_data``, ``colour_bars``...) are shared with the
other figure modules' tests.
"""
from __future__ import annotations

import io

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from PIL import Image

from vitcls_utils.report import style
from vitcls_utils.report import vilas_figures as plots

plt = plots.plt


@pytest.fixture(autouse=True)
def book_theme():
    """Every figure drawn in the book's theme, as the notebooks draw it; settings restored."""
    with matplotlib.rc_context():
        style.set_theme()
        yield
    plt.close("all")


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plots.plt.close(fig)
    return buffer.getvalue()


def natural_size(fig) -> tuple:
    """(width, height) in pixels of the PNG a notebook embeds: the theme's dpi, tight box."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=style.DPI, bbox_inches="tight")
    return Image.open(buffer).size


def smallest_text_px(fig) -> float:
    """The smallest drawn text's height in pixels as the book displays the figure: points at
    the theme's dpi, shrunk by the ratio of the column to the PNG's width where it is wider."""
    width, _ = natural_size(fig)
    sizes = [t.get_fontsize() for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip()]
    return min(sizes) * style.DPI / 72 * min(1.0, style.COLUMN_PX / width)


def readable(fig) -> None:
    """At most the column wide (never shrunk) and no text under ``MIN_TEXT_PX``."""
    width, _ = natural_size(fig)
    assert width <= style.COLUMN_PX, f"{width} px is wider than the {style.COLUMN_PX} px column"
    assert smallest_text_px(fig) >= style.MIN_TEXT_PX


def inside(box, points: np.ndarray) -> np.ndarray:
    """Which display points [n, 2] lie in the bounding box ``box``."""
    x, y = points[:, 0], points[:, 1]
    return (x >= box.x0) & (x <= box.x1) & (y >= box.y0) & (y <= box.y1)


def horizontal_lines_at(ax, y: float) -> list:
    """The lines across the whole axes (``axhline``) at height ``y``."""
    return [line for line in ax.get_lines() if list(line.get_xdata()) == [0, 1]
            and np.allclose(line.get_ydata(), y)]


def along(vertices: np.ndarray, steps: int = 16) -> np.ndarray:
    """Points along a polyline [n, 2]: its vertices and ``steps`` points on every segment."""
    if len(vertices) < 2:
        return vertices
    t = np.linspace(0, 1, steps, endpoint=False)[None, :, None]
    segments = vertices[:-1, None] + t * (vertices[1:] - vertices[:-1])[:, None]
    return np.concatenate([segments.reshape(-1, 2), vertices[-1:]])


def drawn_points(ax) -> np.ndarray:
    """Display coordinates [n, 2] of the lines (vertices and segments), scatter points and bar
    tops of ``ax`` that lie inside it."""
    points = [along(line.get_transform().transform(line.get_xydata()))
              for line in ax.get_lines() if len(line.get_xydata())]
    points += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections
               if len(c.get_offsets())]
    for patch in ax.patches:
        box = patch.get_window_extent()
        if box.width > 1 and box.height > 1:
            points.append(np.array([[box.x0, box.y1], [box.x1, box.y1], [(box.x0 + box.x1) / 2,
                                                                          box.y1]]))
    if not points:
        return np.zeros((0, 2))
    points = np.concatenate(points)
    points = points[np.isfinite(points).all(1)]
    return points[inside(ax.bbox, points)]


def legends_off_the_data(fig) -> None:
    """No legend's box holds a drawn data point (line vertex, marker, bar top) of any axes."""
    fig.canvas.draw()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    for legend in legends:
        box = legend.get_window_extent()
        for ax in fig.axes:
            hidden = inside(box, drawn_points(ax))
            assert not hidden.any(), f"the legend hides {int(hidden.sum())} points"


def colour_bars(fig) -> list:
    """The labels of the figure's colour bars (each must have one)."""
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    labels = [ax.get_ylabel() or ax.get_xlabel() for ax in bars]
    assert all(labels), "a colour bar has no label"
    return labels


def legend_texts(fig) -> list:
    return [t.get_text() for legend in list(fig.legends) + [ax.get_legend() for ax in fig.axes
                                                            if ax.get_legend()]
            for t in legend.get_texts()]


def reported_lines(fig) -> list:
    """Lines drawn in the reported values' style: black crosses."""
    return [line for ax in fig.axes for line in ax.get_lines()
            if line.get_marker() == "x" and line.get_markeredgecolor() in ("black", "k")
            and len(line.get_xydata())]


def frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"block": np.repeat(np.arange(1, 5), 30),
                         "layer": np.tile(["attn", "mlp"], 60),
                         "rate": rng.random(120) * 100})


def test_bands_and_jitter_are_the_same_in_every_run():
    data = frame(0)
    for draw in (lambda: plots.per_block_figure(data, "rate", "layer", "%"),
                 lambda: plots.per_class_figure(data, "rate", "%")):
        first = png(draw())
        np.random.seed(12345)  # the global generator's state must not matter
        assert png(draw()) == first


def test_the_global_generator_is_left_as_it_was():
    np.random.seed(7)
    expected = np.random.random()
    np.random.seed(7)
    png(plots.per_class_figure(frame(1), "rate", "%"))
    assert np.random.random() == expected


# ---- synthetic inputs of every figure, shaped as the analyses return them --------------------

BLOCKS = np.arange(1, 13)
RNG = np.random.default_rng(0)


def evolution() -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"block": np.repeat(BLOCKS, 10), "token": token,
                                    "identifiability": RNG.uniform(0.4, 1.0, 120)})
                      for token in ("[CLS]", "image")])


def paper_evolution() -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"block": BLOCKS, "value": np.linspace(0.3, 0.97, 12),
                                    "token": token}) for token in ("[CLS]", "image")])


def boxes(groups=("[CLS]", "image"), top=1.0) -> pd.DataFrame:
    rows = []
    for block in BLOCKS:
        for group in groups:
            m = top * (0.3 + 0.04 * block)
            rows.append(dict(block=block, token=group, median=m, q1=m - 0.05, q3=m + 0.05,
                             whislo=m - 0.15, whishi=min(m + 0.15, top), mean=m))
    return pd.DataFrame(rows)


TESTS = pd.DataFrame({"block": BLOCKS, "p_value": np.linspace(0.2, 1e-4, 12)})


def layers() -> pd.DataFrame:
    return pd.DataFrame([(b, layer, c, RNG.uniform(20, 90), RNG.uniform(0.1, 0.8))
                         for layer in ("attn", "mlp") for b in BLOCKS for c in range(10)],
                        columns=["block", "layer", "class", "rate", "agreement"])


def paper_layers() -> pd.DataFrame:
    return pd.DataFrame({"block": np.tile(BLOCKS, 2), "value": np.linspace(0.1, 0.9, 24),
                         "layer": np.repeat(["attn", "mlp"], 12)})


def curves() -> pd.DataFrame:
    return pd.DataFrame([(m, t, r, s, RNG.uniform(0, 1)) for m in ("class_space", "rollout",
                                                                    "random")
                         for t in ("negative", "positive") for r in np.linspace(0, 0.9, 10)
                         for s in range(2)],
                        columns=["method", "test", "removed", "seed", "accuracy"])


VIEWS = [RNG.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
MAPS = {m: RNG.random((3, 32, 32)) for m in ("class_space", "gradient_rollout", "rollout")}

FIGURES = {
    "evolution": lambda: plots.evolution_figure(evolution(), "toy ViT", paper_evolution(),
                                                reported_label="reported, ViT-B/16"),
    "boxes": lambda: plots.block_boxes_figure(boxes(), TESTS, title="toy vs random init"),
    "boxes_a6": lambda: plots.block_boxes_figure(boxes(("attn",), 0.6), TESTS, title="A6"),
    "change_rate": lambda: plots.change_rate_figure(
        pd.DataFrame({"block": BLOCKS[1:], "change_rate": np.linspace(0.5, 0.9, 11)}),
        pd.DataFrame({"block": BLOCKS[1:], "value": np.linspace(0.55, 0.95, 11)}),
        title="toy ViT", reported_label="reported, ViT-B/32"),
    "compare": lambda: plots.compare_evolution_figure(
        {f"variant {i}" + (" (random init)" if i % 2 else ""): evolution() for i in range(8)}),
    "per_block": lambda: plots.per_block_figure(layers(), "agreement", "layer",
                                                "class-value agreement", "toy",
                                                paper=paper_layers(), chance=0.5,
                                                reported_label="reported, ViT-B/16"),
    "composition": lambda: plots.composition_figure(pd.DataFrame(
        [(b, s, v) for b in BLOCKS[1:] for s, v in (("previous", 60), ("attn", 25), ("mlp", 15),
                                                    ("composition", 10))],
        columns=["block", "source", "percent"]), "toy"),
    "per_class": lambda: plots.per_class_figure(layers(), "rate", "% tokens agreeing", "A7"),
    "maps": lambda: plots.maps_figure(VIEWS, MAPS, ["goldfish", "great white shark", "tench"],
                                      list(MAPS)),
    "block_maps": lambda: plots.block_maps_figure(VIEWS[0], RNG.random((12, 32, 32)), "Fig 5a"),
    "perturbation": lambda: plots.perturbation_figure(curves(), "A11",
                                                      baselines={"unperturbed": 0.9}),
    "probe": lambda: plots.probe_figure(pd.DataFrame(
        {"block": np.tile(BLOCKS, 2), "site": np.repeat(["resid_post", "attn_out"], 12),
         "linear probe": RNG.random(24), "class projection": RNG.random(24)}), "A12"),
}


@pytest.mark.parametrize("name", FIGURES)
def test_figures_fit_the_column_and_keep_legends_off_the_data(name):
    fig = FIGURES[name]()
    readable(fig)
    legends_off_the_data(fig)


def test_the_checks_catch_a_wide_figure_small_text_and_a_legend_on_the_data():
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(np.arange(10), np.full(10, 0.5), marker="o", label="this run")
    ax.legend(loc="center", fontsize=5)
    with pytest.raises(AssertionError):
        readable(fig)
    with pytest.raises(AssertionError):
        legends_off_the_data(fig)
    fig, _ = style.subplots()
    fig.text(0.5, 0.5, "tiny", fontsize=5)
    assert smallest_text_px(fig) < style.MIN_TEXT_PX


def test_maps_have_a_labelled_colour_bar():
    for name in ("maps", "block_maps"):
        assert "scaled to [0, 1]" in " ".join(colour_bars(FIGURES[name]()))


def test_class_value_agreement_boxes_say_cosine_and_draw_no_chance_line():
    fig = FIGURES["boxes_a6"]()
    ax = fig.axes[0]
    assert "cosine" in ax.get_ylabel() and "identifiability" not in ax.get_ylabel()
    assert not horizontal_lines_at(ax, 0.5)
    fig = FIGURES["boxes"]()  # identifiability keeps its chance line
    assert fig.axes[0].get_ylabel() == "class identifiability"
    assert horizontal_lines_at(fig.axes[0], 0.5)


@pytest.mark.parametrize("name", ["evolution", "change_rate", "per_block"])
def test_reported_values_are_black_crosses_under_the_label_passed(name):
    fig = FIGURES[name]()
    assert reported_lines(fig)
    assert [t for t in legend_texts(fig) if t.startswith("reported, ViT-B/")]


def test_reported_values_keep_the_notebooks_positional_calls():
    paper = paper_evolution()
    fig = plots.evolution_figure(evolution(), "toy", paper)  # title, paper by position
    assert "reported" in legend_texts(fig) and len(reported_lines(fig)) == 2
    rates = pd.DataFrame({"block": BLOCKS[1:], "change_rate": np.full(11, 0.6)})
    fig = plots.change_rate_figure(rates, paper[paper.token == "image"], title="toy")
    assert "reported" in legend_texts(fig)
    fig = plots.per_block_figure(layers(), "rate", "layer", "%", "toy", paper=None)
    assert not reported_lines(fig)


def test_compare_variants_keeps_one_colour_per_variant_across_panels():
    frames = {"with [CLS]": evolution(),
              "GAP": evolution().query("token == 'image'")}
    fig = plots.compare_evolution_figure(frames)
    colours = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_label() in frames:
                colours.setdefault(line.get_label(), set()).add(line.get_color())
    legend = fig.legends[0]
    assert {t.get_text() for t in legend.get_texts()} >= set(frames)
    assert all(len(c) == 1 for c in colours.values())


def test_wide_grids_wrap_into_rows():
    fig = FIGURES["block_maps"]()
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes if ax.get_label() != "<colorbar>"}
    assert len(rows) == 3  # 12 blocks at 4 per row
