"""Chapters 1–4's notebooks on random-init instances of the timm block families, in process.

Each family is timm's own architecture (``timm:<name>:random``, so the anatomy adapter, the
runner's rules and the store path are the real ones) cut down to 2 blocks of width 32 on a 4x4
patch grid of the toy images. For every chapter 1–4 notebook the runner's rules admit, its own
code cells run in this process, in order, with the parameters injected after the parameters
cell as papermill does (a kernel per notebook would cost seconds each); every number it glues
must be finite. The notebooks the rules keep off a family are named, with the reason that
family's adapter gives.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import replace
from pathlib import Path

import pytest

import vitcls_utils.model.loading  # noqa: F401  (torchvision shim before timm)
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.model import registry
from vitcls_utils.model.registry import get_variant
from vitcls_utils.report import page
from vitcls_utils.running import notebook_rules
from vitcls_utils.running.notebook_rules import COMPARISONS, applies, chapters

ROOT = Path(__file__).resolve().parents[1]
_REMOVAL = ("tab_context_perturbation", "figA11_perturbation_test", "figA12_linear_probing")
_MEMORIES = tuple(n for n in notebook_rules.KEY_VALUE_MEMORIES if n.startswith(("fig", "tab")))
_VIT = dict(depth=2, embed_dim=32, num_heads=2, img_size=32, patch_size=8)
#: Swin: 4-px patches (an 8x8 grid), then a 4x4 last stage; windows of 4 tokens
_SWIN = dict(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2),
             num_heads=(1, 2))
#: family -> (timm key, cut-down kwargs, {notebook the rules keep off the family: the words of
#: the reason its adapter gives when the notebook is run anyway})
FAMILIES = {
    "deit3": ("timm:deit3_small_patch16_224:random", _VIT, {}),
    "beit": ("timm:beit_base_patch16_224:random", _VIT,
             dict.fromkeys(_REMOVAL, "relative position bias")),
    "eva02": ("timm:eva02_tiny_patch14_224:random", _VIT,
              {**dict.fromkeys(_REMOVAL, "rotary"), **dict.fromkeys(_MEMORIES, "gated MLP")}),
    "dinov2_reg": ("timm:vit_small_patch14_reg4_dinov2:random", _VIT, {}),
    "swin": ("timm:swin_tiny_patch4_window7_224:random", _SWIN, {
        "tab_attention_perturbation": "within .shifted. windows",
        "tab_context_perturbation": "within .shifted. windows",
        **dict.fromkeys(("fig3b_sublayer_change_rate", "fig3c_residual_composition", *_MEMORIES),
                        "only the last stage has the head's width"),
        **dict.fromkeys(("fig5_explanation_maps", "figA11_perturbation_test",
                         "figA12_linear_probing", "fig5_faithfulness_suite"),
                        "within .shifted. windows")}),
}


#: the notebooks' own size parameters at their smallest (the suite scores 2 images on 2 steps)
SIZES = {"fig5_faithfulness_suite": dict(suite_images=2, suite_steps=2, road_levels=2,
                                         mprt_images=1, mprt_steps=1),
         "figA11_perturbation_test": dict(n_random=1), "figA12_linear_probing": dict(n_random=1)}


def small_variant(family: str):
    """The family's timm key on the toy set (24 classes), cut down and registered under a key
    of its own (so that it never stands in for the full-size key)."""
    key, kwargs, _ = FAMILIES[family]
    spec = registry.variant_for_data(key, "toy")
    preprocess = replace(spec.preprocess, resize=kwargs["img_size"], crop=kwargs["img_size"])
    return replace(spec, key=f"{spec.key}:test-small", preprocess=preprocess,
                   model_kwargs=tuple(kwargs.items()))


def notebook_cells(name: str):
    cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    return [("parameters" in c.get("metadata", {}).get("tags", []), "".join(c["source"]))
            for c in cells if c["cell_type"] == "code"]


def run_notebook(name: str, parameters: dict, glued: dict) -> None:
    """The notebook's code cells in one namespace, the parameters injected after its
    parameters cell; ``display`` shows nothing."""
    import matplotlib.pyplot as plt

    namespace = {"display": lambda *a, **k: None, "__name__": "__main__"}
    for is_parameters, source in notebook_cells(name):
        exec(compile(source, f"{name}.ipynb", "exec"), namespace)  # noqa: S102
        if is_parameters:
            namespace.update(parameters)
        plt.close("all")
    assert glued, f"{name} glued nothing"  # (a refused notebook raises before this)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_chapters_1_to_4_run_on_each_family(family, tmp_path, monkeypatch, capsys):
    spec = registry.register(small_variant(family))
    glued: dict = {}
    monkeypatch.setattr(page, "glue", lambda name, value, display=True: glued.update(
        {name: value}))
    parameters = {"variant": spec.key, "dataset": "toy", "n_per_class": 1, "device": "cpu",
                  "results_dir": str(tmp_path / "results"), "profile": "corrected"}
    notebooks = [n for c in ("chapter1", "chapter2", "chapter3", "chapter4")
                 for n in chapters()[c] if n not in COMPARISONS]
    try:
        ran = [n for n in notebooks if applies(n, spec, "toy")]
        refused = FAMILIES[family][2]
        assert set(notebooks) - set(ran) == set(refused)
        bad = {}
        for name in notebooks:
            glued.clear()
            if name in refused:  # run anyway: it stops with the family's reason
                with pytest.raises(VitclsError, match=refused[name]):
                    run_notebook(name, {**parameters, **SIZES.get(name, {})}, glued)
            else:
                run_notebook(name, {**parameters, **SIZES.get(name, {})}, glued)
            bad.update({f"{name}:{k}": v for k, v in glued.items()
                        if isinstance(v, numbers.Real) and not math.isfinite(float(v))})
        assert not bad, f"glued numbers that are not finite: {bad}"
        said = capsys.readouterr().out  # a page says which blocks its block numbers are
        assert ("blocks 3-4 (numbered across stages) are stage 2, block 1 to stage 2, block 2"
                in said) == (family == "swin")
    finally:
        registry.VARIANTS.pop(spec.key, None)


def test_the_books_table_names_the_models_run_here():
    """The families table's notebook column (model/families.NOTEBOOKS_VERIFIED_ON) is what this
    file runs, each model under the family its blocks are."""
    from vitcls_utils.model.families import NOTEBOOKS_VERIFIED_ON, variant_family

    ran = {key.split(":")[1] for key, _, _ in FAMILIES.values()}
    assert set().union(*NOTEBOOKS_VERIFIED_ON.values()) == ran
    for family, models in NOTEBOOKS_VERIFIED_ON.items():
        for name in models:
            assert variant_family(get_variant(f"timm:{name}:random")).name == family
