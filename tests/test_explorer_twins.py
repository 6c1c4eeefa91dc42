"""The explorers' frames: a token grid over the view with a labelled colour bar, narrow enough
for the widget and with text of at least 9 px."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vitcls_utils.report.explorer_twins import figure_png

RNG = np.random.default_rng(0)
VIEW = RNG.integers(0, 255, (32, 32, 3), dtype=np.uint8)


def test_a_grid_frame_has_a_colour_bar_beside_the_view(monkeypatch):
    import matplotlib.figure

    bars = []
    original = matplotlib.figure.Figure.colorbar

    def spy(self, mappable, **kwargs):
        bar = original(self, mappable, **kwargs)
        bars.append((bar, mappable.get_clim()))
        return bar

    monkeypatch.setattr(matplotlib.figure.Figure, "colorbar", spy)
    png = figure_png(VIEW, RNG.random((4, 4)), "goldfish: block 3", vmax=1.0,
                     label="class identifiability")
    (bar, limits), = bars
    assert bar.ax.get_ylabel() == "class identifiability" and limits == (0, 1.0)
    figure_png(VIEW, RNG.random((4, 4)), "goldfish: block 3", vmax=2.0)
    assert bars[1][0].ax.get_ylabel() == "token value" and bars[1][1] == (0, 2.0)
    width, _ = Image.open(io.BytesIO(png)).size
    assert width <= 360


def test_text_is_at_least_9_px_in_the_bars_frame_too(monkeypatch):
    import matplotlib.figure
    from matplotlib.text import Text

    sizes = []
    original = matplotlib.figure.Figure.savefig

    def spy(self, *args, **kwargs):
        sizes.extend(t.get_fontsize() * self.dpi / 72 for t in self.findobj(Text)
                     if t.get_text().strip())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    figure_png(None, None, "block 3 mlp memory 17", bars=[("goldfish", 2.0), ("tench", 0.5)])
    figure_png(VIEW, RNG.random((4, 4)), "goldfish: block 3")
    assert sizes and min(sizes) >= 9
