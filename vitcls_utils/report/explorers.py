"""Explorers on ipywidgets: the class-space lens, explanation maps and key-value memories.

Each checks its model, stimuli, names and memories against its store (``Store.check_source``),
keeps one selection, and computes (one forward pass) only when the image or class changes.
Tests drive ``set()``/``shown()``; ``widget`` is the live view, ``twin()`` its book HTML."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from .explorer_twins import Twin, data_url, figure_png, table

BOOK_ENV = "VITCLS_BOOK"  #: set by the runner in its kernels: a book page (the book has no kernel)
SITE_KINDS = ("resid_post", "attn_out", "mlp_out")


class Explorer:
    """Controls with allowed values, a state, and a lazily built widget."""

    controls: Dict[str, Sequence] = {}

    def __init__(self) -> None:
        self.state: Dict[str, object] = {name: values[0] for name, values in
                                         self.controls.items()}
        self._widget = None
        self._view = None

    @property
    def model(self):
        """The model, loaded on first use from a loader function (a store-only twin needs none),
        and checked to be the one its store was made by."""
        if callable(self._model) and not hasattr(self._model, "parameters"):  # a loader
            self._model = self._model()
        if not getattr(self, "_model_checked", False):
            self.store.check_source(model=self._model)
            self._model_checked = True
        return self._model

    def set(self, **values) -> "Explorer":
        """Move controls; an unknown control or value is refused, naming the allowed ones."""
        for name, value in values.items():
            if name not in self.controls:
                raise ValueError(f"{type(self).__name__} has no control {name!r}; it has "
                                 f"{sorted(self.controls)}")
            allowed = list(self.controls[name])
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed[:12]}"
                                 f"{' ...' * (len(allowed) > 12)}, not {value!r}")
            self.state[name] = value
        if self._view is not None:
            self._refresh()
        return self

    def shown(self) -> dict:
        """What the view shows now (the numbers behind the picture and the table)."""
        raise NotImplementedError

    @property
    def widget(self):
        """The ipywidgets view: one control per setting, the picture and a table."""
        if self._widget is None:
            import ipywidgets as w

            inputs = {}
            for name, values in self.controls.items():
                values = list(values)
                if all(isinstance(v, (int, np.integer)) for v in values) and len(values) > 6:
                    inputs[name] = w.IntSlider(value=self.state[name], min=min(values),
                                               max=max(values), description=name)
                else:
                    inputs[name] = w.Dropdown(options=values, value=self.state[name],
                                              description=name)
                inputs[name].observe(lambda change, n=name: self.set(**{n: change["new"]}),
                                     names="value")
            self._view = (w.Image(format="png"), w.HTML())
            self._widget = w.VBox([*inputs.values(), w.HBox(list(self._view))])
            self._refresh()
        return self._widget

    def _refresh(self) -> None:
        image, text = self._view
        image.value = self.figure_png()
        text.value = self.table_html()

    def table_html(self) -> str:
        return ""

def show(explorer: Explorer) -> None:
    """Display the live explorer, or its static twin in a run made for the book.

    Args:
        explorer: a :class:`ClassSpaceLens`, :class:`ExplanationExplorer` or
            :class:`MemoryExplorer`.

    Returns:
        None: the widget (or, under ``VITCLS_BOOK``, the twin's HTML) is displayed.
    """
    from IPython.display import HTML, display

    display(HTML(explorer.twin()) if os.environ.get(BOOK_ENV) else explorer.widget)


def distinct_classes(store, rows: Sequence[int], n: int) -> List[int]:
    """Up to ``n`` of ``rows``, one per class first (the twin shows different classes)."""
    seen, first, rest = set(), [], []
    for row in rows:
        label = int(store.labels[row])
        (rest if label in seen else first).append(row)
        seen.add(label)
    return (first + rest)[:n]


class ClassSpaceLens(Explorer):
    """Image x block x site x class: the image's token grid coloured by the class's
    identifiability (1 - rank / C), and one token's top-5 classes with their logits.

    Args:
        model: the variant's model (``load_variant``), or a function loading it for the live view.
        store: its store (a :class:`~vitcls_utils.stores.reader.Store`), for the images and labels.
        stimuli: the dataset the store indexes.
        class_names: a name per class.
        rows: the store rows offered (default: 24, one per class first)."""

    def __init__(self, model, store, stimuli, class_names: Sequence[str],
                 rows: Optional[Sequence[int]] = None) -> None:
        from ..model.layout import TokenLayout
        from ..model.registry import get_variant

        store.check_source(stimuli=stimuli, class_names=class_names)
        self._model, self.store, self.stimuli, self.names = model, store, stimuli, class_names
        layout = store.manifest["layout"]
        self.layout = TokenLayout(num_prefix=int(layout["num_prefix"]),
                                  grid=tuple(layout["grid"]), has_cls=bool(layout["has_cls"]))
        self.preprocess = get_variant(store.variant).preprocess
        n_image = self.layout.grid[0] * self.layout.grid[1]
        rows = distinct_classes(store, range(len(store.labels)), 24) if rows is None else rows
        self.controls = {"image": list(rows), "block": store.block_numbers,
                         "site": list(SITE_KINDS), "class": ["true", *range(len(class_names))],
                         "token": list(range(n_image))}
        super().__init__()
        self.state["block"] = store.block_numbers[-1]
        self._cache: Dict[int, tuple] = {}

    def _computed(self, row: int):
        """(view, logits [L, kinds, N, C]) of one store row: one forward, kept."""
        if row not in self._cache:
            import torch

            from ..model.hooks import block_sites, run_with_cache
            from ..model.projection import ClassProjector

            image, _ = self.stimuli.load(int(self.store.image_index[row]))
            preprocess = self.preprocess
            device = next(self.model.parameters()).device
            names = block_sites(self.model, SITE_KINDS)
            with torch.no_grad():
                _, cache = run_with_cache(self.model, preprocess(image)[None].to(device), names)
                projector = ClassProjector(self.model).to(device)
                logits = torch.stack([self._padded(projector(cache[n][0]))
                                      for n in names]).cpu().numpy()
            logits = logits.reshape(-1, len(SITE_KINDS), *logits.shape[1:])  # [L, kinds, ...]
            view = np.asarray(preprocess.geometry(image.convert("RGB")))
            self._cache = {row: (view, logits)}  # one image at a time: memory stays flat
        return self._cache[row]

    def _padded(self, logits):
        """A site's [N, C] logits, NaN rows for a prefix not there yet (a ConViT's [CLS])."""
        import torch

        absent = logits.new_full((self.layout.n_tokens - logits.shape[0], logits.shape[1]),
                                 float("nan"))
        return torch.cat([absent, logits])

    def shown(self) -> dict:
        import torch

        from ..model.projection import rank_of_true_class

        row, block, site = self.state["image"], self.state["block"], self.state["site"]
        view, logits = self._computed(row)
        logits = logits[self.controls["block"].index(block), SITE_KINDS.index(site)]  # [N, C]
        chosen = int(self.store.labels[row]) if self.state["class"] == "true" \
            else int(self.state["class"])
        tokens = torch.from_numpy(logits)
        ranks = rank_of_true_class(tokens, torch.full((len(tokens),), chosen)).numpy()
        grid = ranks[self.layout.num_prefix:].reshape(self.layout.grid)
        token = self.layout.num_prefix + int(self.state["token"])
        top = np.argsort(-logits[token])[:5]
        return {"image": row, "block": block, "site": site, "class": self.names[chosen],
                "rank": grid, "identifiability": 1 - grid / len(self.names),
                "token": int(self.state["token"]), "view": view,
                "top5": [(self.names[c], float(logits[token, c])) for c in top]}

    def figure_png(self) -> bytes:
        s = self.shown()
        return figure_png(s["view"], s["identifiability"],
                    f"{s['class']}: block {s['block']}, {s['site']}")

    def table_html(self) -> str:
        s = self.shown()
        return table([(n, f"{v:.2f}") for n, v in s["top5"]],
                     [f"token {s['token']}: class", "logit"])

    def twin(self, rows: int = 4) -> str:
        """Images x sites x blocks, the true class's identifiability from the store itself."""
        from ..base.sites import positions_of_kind

        chosen = distinct_classes(self.store, self.controls["image"], rows)
        twin = Twin("Class-space lens: identifiability of the true class per token",
                    {"image": chosen, "site": [k for k in SITE_KINDS
                                               if positions_of_kind(self.store.sites, k)],
                     "block": self.controls["block"]}, shape=self.layout.grid,
                    sliders=("block",))
        for i, row in enumerate(chosen):
            image, _ = self.stimuli.load(int(self.store.image_index[row]))
            view = self.preprocess.geometry(image.convert("RGB"))
            twin.images.append(data_url(np.asarray(view)))
            for site in twin.controls["site"]:
                for b, position in zip(self.controls["block"],
                                       positions_of_kind(self.store.sites, site), strict=True):
                    rank = np.asarray(self.store.rank[row, position, self.layout.num_prefix:])
                    top1 = int((rank == 0).sum())
                    twin.add((row, site, b), f"#{row}, {self.names[int(self.store.labels[row])]}"
                             f": block {b}, {site}: {top1} of {rank.size} image tokens "
                             "have it at rank 1", 1 - rank / len(self.names), image=i)
        return twin.html()


class ExplanationExplorer(Explorer):
    """Image x block x head (from 1) x class vs an alternative: the class-space map of that
    block and head (``head="sum"``: summed) beside Chefer's gradient rollout.

    Args:
        model, store, stimuli, class_names, rows: as for :class:`ClassSpaceLens`.
        paper: the authors' loss (double softmax on the attention sub-layer's output, B12)."""

    def __init__(self, model, store, stimuli, class_names: Sequence[str],
                 rows: Optional[Sequence[int]] = None, paper: bool = True) -> None:
        from ..model.layout import TokenLayout

        store.check_source(stimuli=stimuli, class_names=class_names)
        self._model, self.store, self.stimuli, self.names = model, store, stimuli, class_names
        self.layout, self.paper = TokenLayout.of(self.model), paper
        h = self.model.blocks[0].attn.num_heads  # the heads, numbered from 1 below
        rows = distinct_classes(store, range(len(store.labels)), 24) if rows is None else rows
        self.controls = {"image": list(rows), "block": list(range(1, len(self.model.blocks) + 1)),
                         "head": ["sum", *range(1, h + 1)], "target": ["class", "alternative"],
                         "class": ["true", *range(len(class_names))],
                         "alternative": ["predicted", *range(len(class_names))]}
        super().__init__()
        self.state["block"] = len(self.model.blocks)
        self._cache: Dict[tuple, tuple] = {}

    def classes(self) -> List[int]:
        row = self.state["image"]
        true, pred = int(self.store.labels[row]), int(self.store.pred[row])
        chosen = true if self.state["class"] == "true" else int(self.state["class"])
        other = self.state["alternative"]
        if other == "predicted":
            other = pred if pred != chosen else next(c for c in range(len(self.names))
                                                     if c != chosen)
        return [chosen, int(other)]

    def _computed(self):
        """(view, class-space maps [2, L, H, T], rollout [2, T]) for the image and classes."""
        key = (self.state["image"], *self.classes())
        if key not in self._cache:
            import torch

            from ..analysis.explanation_maps import class_space_maps, gradient_rollout_maps

            image, _ = self.stimuli.load(int(self.store.image_index[key[0]]))
            preprocess = self.model.vitcls_info.variant.preprocess
            device = next(self.model.parameters()).device
            batch = preprocess(image)[None].to(device).repeat(2, 1, 1, 1)
            targets = torch.tensor(key[1:], device=device)
            maps = class_space_maps(self.model, batch, targets, paper=self.paper).cpu().numpy()
            rollout = gradient_rollout_maps(self.model, batch, targets).cpu().numpy()
            view = np.asarray(preprocess.geometry(image.convert("RGB")))
            self._cache = {key: (view, maps, rollout)}
        return self._cache[key]

    def shown(self) -> dict:
        view, maps, rollout = self._computed()
        which = 0 if self.state["target"] == "class" else 1
        per_head = maps[which, self.state["block"] - 1]  # [H, T]
        head = self.state["head"]
        chosen = per_head.sum(0) if head == "sum" else per_head[head - 1]
        classes = self.classes()
        return {"image": self.state["image"], "block": self.state["block"],
                "head": self.state["head"], "class": self.names[classes[which]],
                "classes": [self.names[c] for c in classes], "view": view,
                "map": chosen.reshape(self.layout.grid),
                "rollout": rollout[which].reshape(self.layout.grid)}

    def figure_png(self) -> bytes:
        s = self.shown()
        scaled = s["map"] / (np.abs(s["map"]).max() or 1)
        return figure_png(s["view"], np.clip(scaled, 0, 1),
                    f"{s['class']}: block {s['block']}, head {s['head']}")

    def table_html(self) -> str:
        s = self.shown()
        top = np.argsort(-s["rollout"].ravel())[:5]
        return table([(int(t), f"{s['rollout'].ravel()[t]:.3f}") for t in top],
                     ["Chefer rollout: top token", "value"])

    def twin(self, rows: int = 3) -> str:
        """Images x class/alternative x blocks: the paper's map summed over heads."""
        chosen = distinct_classes(self.store, self.controls["image"], rows)
        twin = Twin("Explanation maps: class vs alternative, per block",
                    {"image": chosen, "target": ["class", "alternative"],
                     "block": self.controls["block"]}, shape=self.layout.grid,
                    sliders=("block",))
        saved = dict(self.state)
        for i, row in enumerate(chosen):
            self.set(image=row, head="sum")
            twin.images.append(data_url(self._computed()[0]))
            for target in ("class", "alternative"):
                for block in self.controls["block"]:
                    s = self.set(target=target, block=block).shown()
                    scaled = np.clip(s["map"] / (np.abs(s["map"]).max() or 1), 0, 1)
                    twin.add((row, target, block), f"#{row}, {s['class']} (vs "
                             f"{[c for c in s['classes'] if c != s['class']][0]}): block "
                             f"{block}, heads summed", scaled, image=i)
        self.set(**saved)
        return twin.html()


class MemoryExplorer(Explorer):
    """Block x layer x memory: the classes a value vector promotes most (E · W), and the
    images whose tokens use that memory most (the store's top key indices).

    Args:
        memories: the model's :class:`~vitcls_utils.analysis.memories.Memories`.
        store: its store with top key indices (``NotebookRun.memory_store()``).
        class_names: a name per class.
        n_memories: how many of each block and layer's strongest memories the twin shows."""

    def __init__(self, memories, store, class_names: Sequence[str], n_memories: int = 8) -> None:
        if store.key_mlp is None:
            raise ValueError("the memory explorer needs a store with key indices "
                             "(NotebookRun.memory_store())")
        store.check_source(class_names=class_names, memories=memories)
        self.memories, self.store, self.names = memories, store, class_names
        self.strongest = {}  # the memories with the largest projection on any class
        for b in range(memories.n_blocks):
            for layer in ("mlp", "attn"):
                best = memories.projection[layer][b].max(dim=0).values
                self.strongest[(b, layer)] = best.topk(min(n_memories, best.numel())).indices \
                    .tolist()
        width = max(memories.projection[layer][0].shape[1] for layer in ("attn", "mlp"))
        self.controls = {"block": list(range(1, memories.n_blocks + 1)),
                         "layer": ["mlp", "attn"], "memory": list(range(width))}
        super().__init__()
        self.state["memory"] = self.strongest[(0, "mlp")][0]

    def shown(self) -> dict:
        block, layer, memory = self.state["block"] - 1, self.state["layer"], self.state["memory"]
        projection = self.memories.projection[layer][block]  # [C, M]
        if memory >= projection.shape[1]:
            raise ValueError(f"the {layer} layer has {projection.shape[1]} memories")
        column = projection[:, memory].numpy()
        top = np.argsort(-column)[:5]
        keys = self.store.key_mlp if layer == "mlp" else self.store.key_attn  # [I, L, N, k]
        uses = (np.asarray(keys[:, block]) == memory).any(-1).sum(-1)  # tokens per image
        images = [int(i) for i in np.argsort(-uses, kind="stable")[:5] if uses[i] > 0]
        return {"block": block + 1, "layer": layer, "memory": memory,
                "classes": [(self.names[c], float(column[c])) for c in top],
                "images": [(i, self.names[int(self.store.labels[i])], int(uses[i]))
                           for i in images]}

    def figure_png(self) -> bytes:
        s = self.shown()
        return figure_png(None, None, f"block {s['block']} {s['layer']} memory {s['memory']}",
                    bars=s["classes"])

    def table_html(self) -> str:
        s = self.shown()
        return table(s["images"], ["store row", "true class", "tokens using it"])

    def twin(self) -> str:
        """Blocks x layers x the strongest memories: classes and top images as tables."""
        n = len(next(iter(self.strongest.values())))
        twin = Twin("Key-value memories: what a value vector promotes, and who uses it",
                    {"block": self.controls["block"], "layer": ["mlp", "attn"],
                     "rank": list(range(1, n + 1))}, sliders=("block",))
        saved = dict(self.state)
        for (block, layer), memories in self.strongest.items():
            for rank, memory in enumerate(memories, start=1):
                s = self.set(block=block + 1, layer=layer, memory=memory).shown()
                rows = [(name, f"{value:.2f}") for name, value in s["classes"]]
                used = ", ".join(f"#{i} ({name})" for i, name, _ in s["images"]) or "none"
                twin.add((block + 1, layer, rank), f"block {block + 1} {layer} memory "
                         f"{memory}; used most by {used}", table=table(rows, ["class",
                                                                               "E · value"]))
        self.set(**saved)
        return twin.html()
