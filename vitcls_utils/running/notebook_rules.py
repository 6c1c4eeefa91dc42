"""Which figure notebooks apply to which variant and dataset: the book's chapters (read from
``_toc.yml``) and the rules the runner plans by (masks, probe splits, heads, [CLS], CNNs,
ConViTs)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

from ..datasets.kinds import MASKED_KINDS, PROBE_SPLITS
from ..base.errors import VitclsError
from ..model.registry import Variant
from ..base import paths

ROOT = paths.ROOT
#: notebooks that compare variants: run once, after the per-variant runs
COMPARISONS = ("compare_variants", "compare_memories")
#: notebooks that read segmentation masks: not run on datasets without them (CIFAR-100, folders;
#: chapter 6's fg/bg notebooks do run on a folder when a ``boxes`` parameter gives the objects)
NEEDS_MASKS = ("fig3a_context_identifiability", "tab_context_perturbation",
               "figA5b_context_change_difference", "ghiasi_tab2_fgbg",
               "ghiasi_bridge_fgbg_lowpass")
#: notebooks that need a few-shot training split (toy probe-train, ImageNet-S test)
NEEDS_PROBE_SPLIT = ("figA12_linear_probing", "vit_fewshot_lsr", "vit_bridge_projection_vs_lsr")
#: the chapter whose notebooks also read models without a class head; a headless variant
#: (the ImageNet-21k ViTs, the CLIP towers) runs only these and HEADLESS_NOTEBOOKS
HEADLESS_CHAPTER = "chapter5"
HEADLESS_NOTEBOOKS = ("ghiasi_fig1_feature_viz",)
#: ConViT's chapter: its notebooks run on the ConViTs alone (each reads its DeiT beside it),
#: and a ConViT runs no other chapter (its [CLS] joins at block 11)
CONVIT_CHAPTER = "chapter7"
#: notebooks that plot a sweep trained on the toy set (ConViT's sample efficiency): run with
#: the toy data only
TOY_ONLY = ("convit_tab2_sample_efficiency",)
#: notebooks that intervene on the [CLS] token: not run on GAP models, which have none
NEEDS_CLS = ("ghiasi_tab1_cls_isolation", "ghiasi_bridge_cls_isolation")
#: chapter 8's notebooks that decompose the logit into heads: pre-norm blocks only (a residual
#: post-norm model, ``*_rpn_*``, normalises every sub-layer's output, so its heads do not add up)
NEEDS_PRENORM = ("readout_fig2_decomposition", "readout_tab1_ablation")
#: notebooks that run the model on a shortened token sequence (chapter 2's keep_class /
#: keep_context, chapter 4's perturbation test, also inside the probing notebook): not run on
#: a block family that refuses it (BEiT's relative position bias, EVA's rotary embeddings are
#: defined on the full grid)
NEEDS_TOKEN_REMOVAL = ("tab_context_perturbation", "figA11_perturbation_test",
                       "figA12_linear_probing")
#: notebooks that read a pooled representation as the mean token: not on attention-pooled
#: models (SigLIP's 'map' head), whose pool is not a mean
NEEDS_MEAN_POOL = ("fig5_explanation_maps", "fig5_faithfulness_suite",
                   "figA11_perturbation_test", "ghiasi_fig7_patch_heatmap")
#: notebooks that read an MLP's units as fc1 rows (feature visualisation, chapter 3's
#: key-value memories): not on gated MLPs (SwiGLU) nor, for the memories, attention-pooled
#: heads (analysis/memories and model/families say why)
NEEDS_PLAIN_MLP = ("ghiasi_fig1_feature_viz",)
#: the notebooks that read a stage-wise model (Swin) on its last stage alone, the only one of
#: the head's width (model/stages): they need the stores' per-block arrays and token labels
#: only. Every other notebook needs an image-wide attention pattern (edits, explanation maps,
#: rollout), token removal or every block in class space (the memories), which Swin's family
#: refuses with its reason (model/families)
LAST_STAGE_NOTEBOOKS = ("tab1_identifiability_rate", "fig2_identifiability_evolution",
                        "figA4_block_change_rate", "fig3a_context_identifiability",
                        "figA5b_context_change_difference")
KEY_VALUE_MEMORIES = ("fig4a_class_value_agreement", "fig4b_key_value_agreement",
                      "figA8_correct_vs_misclassified", "figA9_memory_compositionality",
                      "tabA6b_value_vectors", "ghiasi_bridge_ffn_memories")


def chapters(toc: Path = ROOT / "_toc.yml") -> Dict[str, Tuple[str, ...]]:
    """The book's chapters and their notebooks, in page order, read from ``_toc.yml`` (the one
    place they are listed: a chapter's sections are its figure pages, ``book/figures/<name>``):
    ``--notebooks chapter2`` runs one."""
    import yaml

    found: Dict[str, Tuple[str, ...]] = {}
    for part in yaml.safe_load(toc.read_text())["parts"]:
        for chapter in part["chapters"]:
            names = tuple(section["file"].rsplit("/", 1)[1]
                          for section in chapter.get("sections", [])
                          if section.get("file", "").startswith("book/figures/"))
            if names:
                found[Path(chapter["file"]).name] = names
    return found


def check_runnable(key: str, spec: Variant) -> None:
    """A CNN is a baseline inside chapter 6's notebooks, never a row of the matrix."""
    if not spec.is_vit:
        raise VitclsError(f"{key} is a CNN baseline: chapter 6's notebooks read it beside a ViT "
                          "(their `baselines` parameter); run a ViT variant")


def applies(notebook: str, spec: Variant, dataset: str,
            parameters: Optional[Mapping[str, object]] = None) -> bool:
    """Whether the per-variant ``notebook`` (a stem) runs for ``spec`` on ``dataset``, given the
    notebook parameters the run sets (a ``boxes`` file gives a folder its objects)."""
    if notebook in COMPARISONS:
        return False
    if (spec.family == "convit") != (notebook in chapters().get(CONVIT_CHAPTER, ())):
        return False
    if not spec.has_head and notebook not in (chapters().get(HEADLESS_CHAPTER, ())
                                              + HEADLESS_NOTEBOOKS):
        return False
    if notebook in NEEDS_CLS and spec.pooling != "token":
        return False
    if notebook in NEEDS_PRENORM and "_rpn_" in spec.arch:
        return False
    # an attention-pooled head is not linear in the tokens: no decomposition through it
    if notebook in NEEDS_MEAN_POOL + KEY_VALUE_MEMORIES + NEEDS_PRENORM and spec.pooling == "map":
        return False
    if spec.family == "timm" and not _family_allows(spec, notebook):
        return False
    if notebook in TOY_ONLY and dataset != "toy":
        return False
    boxed = bool((parameters or {}).get("boxes"))
    if notebook in NEEDS_MASKS and dataset not in MASKED_KINDS and not boxed:
        return False
    return not (notebook in NEEDS_PROBE_SPLIT and dataset not in PROBE_SPLITS)


def _family_allows(spec: Variant, notebook: str) -> bool:
    """A ``timm:`` variant's block family (read off the model) against the notebook's needs."""
    from ..model.families import variant_family, variant_gated_mlp

    family = variant_family(spec)
    if not family.supports("every_block"):  # Swin: its last stage alone is read
        return notebook in LAST_STAGE_NOTEBOOKS
    if notebook in NEEDS_TOKEN_REMOVAL and not family.supports("token_removal"):
        return False
    if notebook in NEEDS_PRENORM and family.name != "vit":  # the decomposition reads timm's
        return False                                        # ViT Block (its docstring says why)
    return not (notebook in NEEDS_PLAIN_MLP + KEY_VALUE_MEMORIES and variant_gated_mlp(spec))
