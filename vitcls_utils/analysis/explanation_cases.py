"""Which images Figure 5 explains: the default cases of a run (a correct and a misclassified
stimulus, and on the toy a two-object image), the paper's own cases (Fig 5a/5b, A10) where the
stimuli hold them, and the share of each map's mass on the object, as tables and figure inputs
the notebook only draws."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from .explanation_maps import dataset_maps, explain_images, head_maps, mass_on_object
from ..stores.reader import Store

Case = Tuple[str, object, int]  # (title, PIL image, class of interest)
#: (views, method -> maps, titles) of one figure of maps
MapsFigure = Tuple[list, Dict[str, np.ndarray], List[str]]


def chosen_cases(results: Store, stimuli, names: Sequence[str], dataset: str,
                 images: Optional[Sequence[int]] = None) -> List[Case]:
    """The store rows ``images``, or the first correctly classified stimulus and the first
    misclassified one; a misclassified one is explained for its true and its predicted class.
    On the toy (and by default) a two-object image is added, explained for each object.

    Args:
        results: the run's extraction store.
        stimuli: the dataset the store was extracted from.
        names: class names, indexed by class.
        dataset: the dataset's name (two-object cases only for "toy").
        images: store rows to explain; None: the default cases.

    Returns:
        A list of (title, PIL image, class of interest) tuples.
    """
    if images is None:
        right = np.flatnonzero(results.pred == results.labels)
        wrong = np.flatnonzero(results.pred != results.labels)
        chosen = sorted({int(group[0]) for group in (right, wrong) if len(group)})
    else:
        chosen = [int(i) for i in images]
    cases: List[Case] = []
    for i in chosen:  # rows of the store; image_index maps them to the dataset
        image, _ = stimuli.load(int(results.image_index[i]))
        true, pred = int(results.labels[i]), int(results.pred[i])
        cases.append((f"#{i}: true {names[true]}", image, true))
        if pred != true:
            cases.append((f"#{i}: predicted {names[pred]}", image, pred))
    if images is None and dataset == "toy":
        from ..datasets import toy

        pair, _, (a, b) = toy.two_objects("val", 0, toy.SPLIT_SIZES["val"] * 9 + 2)
        cases += [(f"two objects: {names[a]}", pair, a), (f"two objects: {names[b]}", pair, b)]
    return cases


def paper_cases(variant: str, dataset) -> List[Dict[str, object]]:
    """The paper's own explanation cases (Fig 5, A10: ``data/paper/explanation_cases.csv``)
    that ``dataset`` holds, for ``variant`` (the B/32 cases serve every ImageNet variant): each
    a dict with the stimulus index, the class and its alternative, and the block (0-based) and
    head of the per-head map, or None for A10's summed maps. Image k of a wnid is the k-th
    stimulus of that class in dataset order."""
    import pandas as pd

    from ..model.registry import data_dir

    if dataset.num_classes != 1000:
        return []
    cases = pd.read_csv(data_dir() / "paper" / "explanation_cases.csv",
                        dtype={"block": "Int64", "head": "Int64"})
    own = cases[cases.variant == variant]
    cases = own if len(own) else cases[cases.variant == "vit_b32"]
    by_wnid: Dict[str, List[int]] = {}
    for index, name in enumerate(dataset.item_names()):
        by_wnid.setdefault(name.split("/")[-2], []).append(index)
    found = []
    for row in cases.itertuples():
        indices = by_wnid.get(row.wnid, [])
        if row.image < len(indices):
            found.append({"figure": row.figure, "index": indices[row.image], "wnid": row.wnid,
                          "image": int(row.image), "class": int(row[5]),
                          "alternative": int(row.alternative),
                          "block": None if pd.isna(row.block) else int(row.block),
                          "head": None if pd.isna(row.head) else int(row.head)})
    return found


def paper_case_maps(model, variant: str, stimuli, names: Sequence[str],
                    paper: bool = True) -> List[MapsFigure]:
    """The class-space maps of the paper's own cases that ``stimuli`` hold, each for its class
    and the alternative one: the summed maps (Fig 5b, A10), then the per-head maps of the cases
    that name a block and head (Fig 5a).

    Args:
        model: a loaded timm ViT (with ``vitcls_info``).
        variant: the registry variant's name (its cases, else the B/32 cases).
        stimuli: the dataset; only an ImageNet one (1000 classes) holds the cases.
        names: class names, indexed by class.
        paper: the authors' class-space loss (B12).

    Returns:
        A list of (views, maps, titles) figures, K panels each: views as in
        :func:`~.explanation_maps.explain_images`, maps {"class_space": [K, H, W], ...} and K
        titles. First the summed maps (its dict also holds "class_space_blocks"
        [K, L, H, W]), then, where cases name one, the per-head maps. Empty when the stimuli
        hold no case.
    """
    chosen = paper_cases(variant, stimuli)
    if not chosen:
        return []
    pictures = [stimuli.load(c["index"])[0] for c in chosen]
    pairs = [(c, pictures[k], key) for k, c in enumerate(chosen) for key in ("class", "alternative")]
    titles = [f"{c['figure']}: {c['wnid']} #{c['image']}, {names[c[key]]}" for c, _, key in pairs]
    views, summed = explain_images(model, [p for _, p, _ in pairs],
                                   [c[key] for c, _, key in pairs], ["class_space"], paper=paper)
    figures: List[MapsFigure] = [(views, summed, titles)]
    with_head = [k for k, (c, _, _) in enumerate(pairs) if c["block"] is not None]
    if with_head:
        heads = np.stack([head_maps(model, [pairs[k][1]], [pairs[k][0][pairs[k][2]]],
                                    pairs[k][0]["block"], pairs[k][0]["head"], paper=paper)[0]
                          for k in with_head])
        figures.append(([views[k] for k in with_head], {"class_space": heads},
                        [f"{titles[k]} (bl. {pairs[k][0]['block']}, h. {pairs[k][0]['head']})"
                         for k in with_head]))
    return figures


def object_mass_table(model, stimuli, results: Store, methods: Sequence[str],
                      paper: bool = True) -> pd.DataFrame:
    """Per method, the share of the maps' positive mass on the object's tokens over the
    stimuli with masks, beside the object's share of the tokens (:func:`mass_on_object`).

    Args:
        model: a loaded timm ViT (with ``vitcls_info``).
        stimuli: the dataset the store was extracted from.
        results: the run's extraction store, with token labels.
        methods: map methods (see :data:`~.explanation_maps.METHODS`).
        paper: the authors' class-space loss (B12).

    Returns:
        DataFrame, a row per method: ``method``, ``map mass on the object`` and ``object share
        of tokens`` (fractions), and each image's, ``mass_images`` and ``share_images``.
    """
    rows = []
    for method in methods:
        scores = dataset_maps(method, model, stimuli, paper=paper)[results.image_index]
        rows.append({"method": method,
                     **mass_on_object(scores, results.token_class, results.num_prefix)})
    return pd.DataFrame(rows)


def focus_sentence(ours: Optional[pd.Series], dataset: str) -> str:
    """The page's sentence on where the class-space maps put their mass (``ours``: its row of
    :func:`object_mass_table`), or why it is not measured (a dataset without masks).

    Args:
        ours: the class-space row of :func:`object_mass_table`; None: no masks. With its
            ``mass_images`` and ``share_images``, the sentence adds their paired difference
            with its 95% interval and whether it excludes zero.
        dataset: the dataset's name, as the sentence names it.

    Returns:
        One sentence of Markdown-ready text.
    """
    if ours is None:
        return (f"The {dataset} stimuli have no segmentation masks, so where the maps put their "
                "mass (on the object or its context) is not measured here.")
    text = (f"Over the stimuli with masks, {100 * ours['map mass on the object']:.1f}% of the "
            "positive mass of the class-space maps lies on the object's tokens, which make up "
            f"{100 * ours['object share of tokens']:.1f}% of the tokens; a map that knew nothing "
            "would put about that share there.")
    if "mass_images" not in ours:
        return text
    from ..base.uncertainty import paired_difference

    gap = paired_difference(ours["mass_images"], ours["share_images"])
    verdict = ("its 95% CI excludes zero" if gap.excludes_zero
               else "its 95% CI holds zero: not resolved")
    return (text[:-1] + f"; the map's mass minus the object's share, paired over the same "
            f"{gap.n} images, is {gap.format(3)} ({verdict}).")
