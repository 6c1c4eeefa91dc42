"""Static twins of the explorers: self-contained HTML for the book, which has no kernel.

A twin is a set of frames keyed by the values of a few controls (buttons, or a slider for a
block). Each frame is a token grid drawn over the image as the model sees it, a caption, and
optionally a table. Its data, style and script are inline: the page makes no request.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

STYLE = """
.vitcls-twin{border:1px solid #ddd;border-radius:6px;padding:.6em;margin:.8em 0;font-size:.9em}
.vitcls-twin .row{display:flex;flex-wrap:wrap;gap:.3em;align-items:center;margin:.2em 0}
.vitcls-twin input[type=range]{flex:1 1 12em;max-width:20em}
.vitcls-twin button{border:1px solid #bbb;background:#f7f7f7;border-radius:4px;padding:.1em .5em;
cursor:pointer;width:auto;display:inline-block;flex:0 0 auto;margin:0;color:#222}
.vitcls-twin button.on{background:#00798c;color:#fff;border-color:#00798c}
.vitcls-twin .view{position:relative;display:inline-block;margin-top:.4em}
.vitcls-twin .view img,.vitcls-twin .view canvas{width:min(280px,80vw);height:auto;
image-rendering:pixelated;display:block}
.vitcls-twin .view canvas{position:absolute;left:0;top:0;opacity:.62}
.vitcls-twin table{border-collapse:collapse;margin-top:.4em}
.vitcls-twin td,.vitcls-twin th{border:1px solid #ddd;padding:.1em .4em}
"""

SCRIPT = """
(function(root, d){
  const state = {};
  d.controls.forEach(c => state[c.name] = d.sliders.includes(c.name) ?
                        c.options[c.options.length - 1] : c.options[0]);
  const canvas = root.querySelector('canvas'), img = root.querySelector('img');
  function colour(v){ // 0..1 -> dark blue .. teal .. yellow
    const s=[[68,1,84],[33,145,140],[253,231,37]], t=Math.max(0,Math.min(1,v))*2,
          i=Math.min(1,Math.floor(t)), f=t-i, a=s[i], b=s[i+1];
    return 'rgb('+a.map((x,k)=>Math.round(x+(b[k]-x)*f)).join(',')+')';
  }
  function render(){
    const key = d.controls.map(c => state[c.name]).join('|'), f = d.frames[key];
    root.querySelectorAll('[data-control]').forEach(el => {
      const v = state[el.dataset.control];
      if (el.tagName === 'BUTTON') el.classList.toggle('on', el.dataset.value === String(v));
      if (el.tagName === 'INPUT') el.value = v;
    });
    root.querySelector('.vitcls-caption').textContent = f ? f.caption : 'no data';
    root.querySelector('.vitcls-table').innerHTML = f && f.table ? f.table : '';
    const view = root.querySelector('.view');
    if (!f || !f.grid){ view.style.display='none'; return; }
    view.style.display='inline-block';
    img.src = d.images[f.image];
    const [h, w] = d.shape, ctx = canvas.getContext('2d');
    canvas.width = w; canvas.height = h;
    f.grid.forEach((v, k) => { ctx.fillStyle = colour(v); ctx.fillRect(k % w, Math.floor(k / w), 1, 1); });
  }
  root.querySelectorAll('button[data-control]').forEach(b => b.addEventListener('click', () => {
    const c = d.controls.find(c => c.name === b.dataset.control);
    state[c.name] = c.options.find(o => String(o) === b.dataset.value); render(); }));
  root.querySelectorAll('input[data-control]').forEach(r => r.addEventListener('input', () => {
    state[r.dataset.control] = Number(r.value); render(); }));
  render();
})(document.getElementById('__ID__'), __DATA__);
"""


@dataclass
class Twin:
    """A static twin: controls (name -> options, in order), frames keyed by one option of
    each control joined by ``|``, grids of ``shape`` over images (data URLs)."""

    title: str
    controls: Dict[str, list]
    shape: Sequence[int] = (1, 1)
    images: List[str] = field(default_factory=list)
    frames: Dict[str, dict] = field(default_factory=dict)
    sliders: Sequence[str] = ()  # controls drawn as a range input, starting at the last option

    def add(self, values: Sequence, caption: str, grid: Optional[np.ndarray] = None,
            image: int = 0, table: Optional[str] = None) -> None:
        """One frame: ``grid`` values in [0, 1] (row-major over ``shape``)."""
        frame: Dict[str, object] = {"caption": caption, "image": image}
        if grid is not None:
            frame["grid"] = [round(float(v), 3) for v in np.asarray(grid).ravel()]
        if table is not None:
            frame["table"] = table
        self.frames["|".join(str(v) for v in values)] = frame

    def html(self) -> str:
        """The twin as one HTML fragment, style and script inline."""
        rows = []
        for name, options in self.controls.items():
            if name in self.sliders:
                rows.append(f'<div class="row">{html.escape(name)} <input type="range" '
                            f'data-control="{name}" min="{min(options)}" max="{max(options)}" '
                            f'step="1" value="{options[-1]}" aria-label="{name}"></div>')
            else:
                buttons = "".join(f'<button type="button" data-control="{name}" '
                                  f'data-value="{html.escape(str(o))}">{html.escape(str(o))}'
                                  "</button>" for o in options)
                rows.append(f'<div class="row">{html.escape(name)} {buttons}</div>')
        data = {"controls": [{"name": n, "options": o} for n, o in self.controls.items()],
                "shape": list(self.shape), "images": self.images, "frames": self.frames,
                "sliders": list(self.sliders)}
        payload = json.dumps(data, default=int, ensure_ascii=False)
        # named by its content: the same run gives the same page, byte for byte
        ident = "vitcls-twin-" + hashlib.sha256((self.title + payload).encode()).hexdigest()[:10]
        script = SCRIPT.replace("__ID__", ident).replace("__DATA__", payload.replace("</", "<\\/"))
        return (f'<style>{STYLE}</style><div class="vitcls-twin" id="{ident}">'
                f"<strong>{html.escape(self.title)}</strong>{''.join(rows)}"
                '<div class="view"><img alt="stimulus"><canvas></canvas></div>'
                '<div class="vitcls-caption"></div><div class="vitcls-table"></div></div>'
                f"<script>{script}</script>")


def data_url(image: np.ndarray, size: int = 160) -> str:
    """A uint8 RGB array as an inline PNG (``data:`` URL), resized to ``size`` pixels wide."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    picture = picture.resize((size, round(size * picture.height / picture.width)))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A small HTML table."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def figure_png(view: Optional[np.ndarray], grid: Optional[np.ndarray], title: str,
               vmax: float = 1.0, bars: Optional[Sequence[tuple]] = None,
               label: Optional[str] = None) -> bytes:
    """An explorer's frame: the view with a token grid drawn over it and a labelled colour bar
    (or horizontal bars), about 320 px wide with text of at least 11 px.

    Args:
        view: the image as the model sees it [H, W, 3], or None with ``bars``.
        grid: per-token values [grid_h, grid_w], drawn from 0 to ``vmax``.
        title: the frame's title.
        vmax: the top of the colour scale.
        bars: (name, value) pairs drawn as horizontal bars instead of an image.
        label: the colour bar's label (what the grid holds); None: "token value".

    Returns:
        The frame as PNG bytes.
    """
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"font.size": 9, "axes.labelsize": 9, "xtick.labelsize": 9,
                                "ytick.labelsize": 9}):  # the same frame whatever the theme
        return _frame(view, grid, title, vmax, bars, label, Figure)


def _frame(view, grid, title, vmax, bars, label, Figure) -> bytes:
    fig = Figure(figsize=(3.6, 3.4) if bars is None else (3.6, 2.4), dpi=90,
                 layout="constrained")
    ax = fig.subplots()
    ax.set_title(title, fontsize=10)
    if bars is not None:
        names, values = zip(*bars)
        ax.barh(list(names)[::-1], list(values)[::-1], color="#00798c")
        ax.set_xlabel("class embedding · value vector")
    else:
        ax.imshow(view)
        shown = ax.imshow(grid, cmap="viridis", alpha=0.6, vmin=0, vmax=vmax,
                          extent=(0, view.shape[1], view.shape[0], 0), interpolation="nearest")
        ax.set(xticks=[], yticks=[])
        bar = fig.colorbar(shown, ax=ax, shrink=0.8, label=label or "token value")
        bar.solids.set_alpha(0.6)  # as the grid is drawn over the image
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=90)
    return buffer.getvalue()
