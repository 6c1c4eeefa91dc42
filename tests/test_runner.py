"""The papermill matrix runner: plans, titles, skips what is up to date, survives failures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import make_imagenet_s
from vitcls_utils.running import jupyter_kernels as kernels, notebook_rules, runner
from vitcls_utils.base.errors import UnknownVariantError, VitclsError


def test_groups_and_plan(tmp_path):
    assert runner.expand_variants(["toy", "toy_gap"]) == ["toy", "toy_gap", "toy_random",
                                                         "toy_convit"]
    assert len(runner.expand_variants(["paper"])) == 7
    with pytest.raises(UnknownVariantError):
        runner.expand_variants(["vit_b99"])
    jobs = runner.plan(["toy", "toy_gap"], "*", tmp_path, "cpu", None, tmp_path / "runs")
    per_variant = [j for j in jobs if j.variant]
    # toy_gap has no [CLS] to isolate and residual post-norm blocks (no decomposition);
    # chapter 7 runs on ConViTs alone
    vit_pages = (len(runner.source_notebooks()) - len(runner.COMPARISONS)
                 - len(runner.chapters()["chapter7"]))
    assert len(per_variant) == (2 * vit_pages - len(runner.NEEDS_CLS)
                                - len(notebook_rules.NEEDS_PRENORM))
    assert jobs[-1].variant is None and jobs[-1].output.parent.name == "compare"
    assert jobs[0].parameters["dataset"] == "toy"
    with pytest.raises(VitclsError, match="--data-dir"):
        runner.plan(["vit_b32"], "tab1*", tmp_path, "cpu", None)
    with pytest.raises(VitclsError, match="no notebook"):
        runner.source_notebooks("fig99*")


def test_run_titles_hides_parameters_and_skips_when_up_to_date(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    matrix = runner.run(["toy_random"], "tab1*", device="cpu", results_dir=results,
                       runs_dir=runs, log=lambda *a: None)
    assert [j.status for j in matrix] == ["ran"], matrix[0].message
    executed = nbformat.read(runs / "toy_random" / "tab1_identifiability_rate.ipynb", 4)
    assert executed.cells[0].source.startswith("# Table 1: Toy ViT (CLS) (random init)")
    hidden = [c for c in executed.cells if "remove-cell" in c.metadata.get("tags", [])]
    assert any("injected-parameters" in c.metadata["tags"] for c in hidden)
    assert executed.metadata["vitcls"]["status"] == "ok"
    again = runner.run(["toy_random"], "tab1*", device="cpu", results_dir=results,
                      runs_dir=runs, log=lambda *a: None)
    assert [j.status for j in again] == ["skipped"]
    assert "0 ran, 1 skipped, 0 failed" in runner.summary(again)


def test_random_paper_variant_offline_and_real_variant_without_weights(tmp_path):
    """`vitcls run --variants vit_b16_random --notebooks 'tab1*'` works on ImageNet-S data
    without weights; vit_b32 fails with the clear message and a non-zero exit, and does not
    stop the others."""
    tree = make_imagenet_s(tmp_path / "data") / "ImageNetS919"
    env = dict(os.environ, TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    script = ("import sys; from vitcls_utils.running import runner; from pathlib import Path; "
              "m = runner.run(sys.argv[1:], 'tab1*', device='cpu', data_dir=%r, "
              "results_dir=Path(%r), runs_dir=Path(%r)); print(runner.summary(m)); "
              "sys.exit(1 if any(j.status == 'failed' for j in m) else 0)")
    code = script % (str(tree), str(tmp_path / "results"), str(tmp_path / "runs"))
    result = subprocess.run([sys.executable, "-c", code, "vit_b32", "vit_b16_random"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 ran, 0 skipped, 1 failed" in result.stdout
    assert "WeightsError" in result.stdout and "--weights PATH" in result.stdout
    page = tmp_path / "runs" / "vit_b16_random" / "tab1_identifiability_rate.ipynb"
    meta = json.loads(page.read_text())["metadata"]["vitcls"]
    assert meta["parameters"]["dataset"] == "imagenet-s"


def test_mask_notebooks_only_where_there_are_masks(tmp_path):
    jobs = runner.plan(["vit_b16_cifar100"], "*", tmp_path, "cpu", str(tmp_path))
    names = {j.notebook.stem for j in jobs if j.variant}
    assert names and not names & set(runner.NEEDS_MASKS)
    jobs = runner.plan(["vit_b32"], "*", tmp_path, "cpu", str(tmp_path))
    assert set(runner.NEEDS_MASKS) <= {j.notebook.stem for j in jobs}


def run_chapter(tmp_path, variant: str, chapter: str, expected: int) -> str:
    """Run a chapter's notebooks for ``variant`` on a fabricated ImageNet-S tree; returns the
    text the runs printed."""
    tree = make_imagenet_s(tmp_path / "data") / "ImageNetS919"
    matrix = runner.run([variant], chapter, device="cpu", data_dir=str(tree),
                       results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
                       log=lambda *a: None)
    assert [j.status for j in matrix] == ["ran"] * expected, runner.summary(matrix)
    cached = list((tmp_path / "results" / ".stimuli").glob("imagenet-s-*/cache.json"))
    assert len(cached) == 1, "the runner decodes the variant's stimuli once, into the cache"
    return "".join(o.get("text", "") for job in matrix
                   for c in nbformat.read(job.output, 4).cells if c.cell_type == "code"
                   for o in c.outputs)


def test_chapter2_notebooks_on_random_b32_and_a_fabricated_imagenet_s(tmp_path):
    """The three chapter-2 notebooks run on vit_b32_random with ImageNet-S masks (offline)."""
    printed = run_chapter(tmp_path, "vit_b32_random", "chapter2",
                          expected=len(runner.chapters()["chapter2"]))
    assert "class-labeled" in printed and "context-labeled" in printed and "self_only" in printed


def test_chapter3_notebooks_on_random_b16_and_a_fabricated_imagenet_s(tmp_path):
    """Every chapter-3 notebook, and the comparison, runs on vit_b16_random (offline)."""
    printed = run_chapter(tmp_path, "vit_b16_random", "chapter3",
                          expected=len(runner.chapters()["chapter3"]))
    assert "variants with chapter-3 summaries: vit_b16_random" in printed


def test_every_notebook_is_in_a_chapter_and_in_the_toc():
    listed = [name for names in runner.chapters().values() for name in names]
    on_disk = sorted(p.stem for p in runner.NOTEBOOKS.glob("*.ipynb"))
    assert sorted(listed) == on_disk
    toc = (runner.ROOT / "_toc.yml").read_text()
    for name in listed:
        assert f"/{name}\n" in toc, f"{name} is not in _toc.yml"
    assert runner.source_notebooks("chapter2")[0].stem == "tab_attention_perturbation"


def test_chapter4_notebooks_on_random_b32_and_a_fabricated_imagenet_s(tmp_path):
    """Explanation maps, the perturbation test and the probes run on vit_b32_random with
    ImageNet-S data (one image per class, one random order, four points per curve and probes of
    the residual stream only, to keep CI short)."""
    tree = make_imagenet_s(tmp_path / "data") / "ImageNetS919"
    for notebook in runner.source_notebooks("chapter4"):
        params = {"variant": "vit_b32_random", "dataset": "imagenet-s", "data_dir": str(tree),
                  "device": "cpu", "results_dir": str(tmp_path / "results"), "n_per_class": 1}
        if notebook.stem in ("figA11_perturbation_test", "figA12_linear_probing"):
            params.update(n_random=1, n_points=4)  # a few curve points, residual probes
        if notebook.stem == "fig5_faithfulness_suite":  # two images, one level, one layer
            params.update(suite_images=2, suite_steps=1, road_levels=1, mprt_images=2,
                          mprt_steps=1)
        if notebook.stem == "figA12_linear_probing":
            params["probe_kinds"] = ["resid_post"]
        job = runner.execute(runner.Job(notebook, tmp_path / "runs" / notebook.name, params,
                                        "vit_b32_random"), keep_kernel=True)
        assert job.status == "ran", job.message
    kernels.discard_thread_kernel()


def test_chapter5_runs_on_a_random_original_vit_without_a_head(tmp_path):
    """The ViT chapter on a random-init ImageNet-21k B/32 (no head) with a fabricated
    ImageNet-S tree; a headless variant is planned for that chapter only."""
    from vitcls_utils.running import dry_run as dryrun

    key = "vit_orig_b32_in21k_random"
    tree = dryrun.fabricate_imagenet_s(tmp_path / "data", n_classes=3, n_images=5, n_test=10)
    planned = {j.notebook.stem for j in runner.plan([key], "*", tmp_path, "cpu", str(tree))
               if j.variant}
    assert planned == set(runner.chapters()["chapter5"]) | set(runner.HEADLESS_NOTEBOOKS)
    planned = set(runner.chapters()["chapter5"])
    matrix = runner.run([key], "chapter5", device="cpu", data_dir=str(tree),
                        results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
                        log=lambda *a: None)
    assert [j.status for j in matrix] == ["ran"] * len(planned), runner.summary(matrix)
    printed = "".join(o.get("text", "") for job in matrix
                      for c in nbformat.read(job.output, 4).cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "the model's head: none (no class head)" in printed
    assert "no class head: no identifiability" in printed
    # ImageNet-S test: 10 per class, so the 25-shot set is the whole pool, as in big_vision
    assert "shots [1, 5, 10, 25]" in printed
    assert "at 25 shots every class has fewer images: the set is the whole pool" in printed
    assert "Large: 24 layers, width 1024, MLP 4096, 16 heads" in printed
    assert not (tmp_path / "results" / key).exists()  # nothing needed a class-space store


#: chapter 6 on 384-px random weights, cut to a few images, L values, cutoffs and steps
SMALL_CHAPTER6 = {"images_per_class": 1, "n_per_class": 1, "Ls": [0, 11, 12], "cutoffs": [56, 7],
                  "steps": 2, "copies": 2, "top_k": 2, "k": 2, "units_per_block": 2}


def test_chapter6_runs_on_a_random_384px_vit_a_cnn_and_a_clip_tower(tmp_path):
    """Every chapter-6 notebook on a random-init ViT-B/32-384 with a random ResNet-50 beside it,
    and the feature visualisation (the only one planned) on a random CLIP tower."""
    from vitcls_utils.running import dry_run as dryrun

    tree = dryrun.fabricate_imagenet_s(tmp_path / "data", n_classes=3, n_images=2, n_test=2)
    printed = {}
    for key in ("ghiasi_b32_384_random", "clip_b32_random"):
        jobs = [j for j in runner.plan([key], "chapter6", tmp_path / "results", "cpu", str(tree),
                                       runs_dir=tmp_path / "runs") if j.variant]
        if key.startswith("clip"):
            assert [j.notebook.stem for j in jobs] == ["ghiasi_fig1_feature_viz"]
        else:
            assert len(jobs) == len(runner.chapters()["chapter6"])
        for job in jobs:
            declared = runner.notebook_parameters(job.notebook)
            job.parameters.update({k: v for k, v in SMALL_CHAPTER6.items() if k in declared})
            assert runner.execute(job, keep_kernel=True).status == "ran", job.message
            print(f"{key} {job.notebook.stem}: {job.seconds:.1f} s")
            printed[(key, job.notebook.stem)] = "".join(
                o.get("text", "") for c in nbformat.read(job.output, 4).cells
                if c.cell_type == "code" for o in c.outputs)
    kernels.discard_thread_kernel()
    assert "ResNet-50" in printed[("ghiasi_b32_384_random", "ghiasi_tab2_fgbg")]
    assert "isolating [CLS] up to L = 11" in printed[("ghiasi_b32_384_random",
                                                      "ghiasi_tab1_cls_isolation")]
    assert "ranked for 36864 units" in printed[("clip_b32_random", "ghiasi_fig1_feature_viz")]


#: chapter 7 on 224-px random weights, cut to a few images and masks
SMALL_CHAPTER7 = {"n_per_class": 1, "n_images": 2, "ks": [3], "batch_size": 8}


def test_chapter7_runs_on_random_convit_tiny_with_random_deit_tiny_beside_it(tmp_path):
    """Every chapter-7 notebook that applies to ImageNet-S on a random-init ConViT-Ti, which
    reads a random DeiT-Ti beside it; the toy ConViT plans chapter 7 alone, sweep included."""
    from vitcls_utils.running import dry_run as dryrun

    toy = {j.notebook.stem for j in runner.plan(["toy_convit"], "*", tmp_path, "cpu") if j.variant}
    assert toy == set(runner.chapters()["chapter7"])
    assert not {j.notebook.stem for j in runner.plan(["toy"], "chapter7", tmp_path, "cpu")
                if j.variant}
    tree = dryrun.fabricate_imagenet_s(tmp_path / "data", n_classes=3, n_images=2, n_test=2)
    jobs = [j for j in runner.plan(["convit_tiny_random"], "chapter7", tmp_path / "results",
                                   "cpu", str(tree), runs_dir=tmp_path / "runs") if j.variant]
    assert {j.notebook.stem for j in jobs} == toy - set(runner.TOY_ONLY)
    printed = {}
    for job in jobs:
        declared = runner.notebook_parameters(job.notebook)
        job.parameters.update({k: v for k, v in SMALL_CHAPTER7.items() if k in declared})
        assert runner.execute(job, keep_kernel=True).status == "ran", job.message
        printed[job.notebook.stem] = "".join(
            o.get("text", "") for c in nbformat.read(job.output, 4).cells
            if c.cell_type == "code" for o in c.outputs)
    kernels.discard_thread_kernel()
    assert "DeiT-Ti (random init): top-1" in printed["convit_tab1_zoo"]
    assert "5.72M parameters" in printed["convit_tab1_zoo"]
    assert "mean gate per layer 0.73" in printed["convit_fig6_gating"]  # sigma(1) at init
    assert "content masked, first 3" in printed["convit_tab5_tab6_masking"]
    assert "block 12 image tokens" in printed["convit_bridge_identifiability"]
    stores = {p.parent.parent.name for p in (tmp_path / "results").glob("*/*/manifest.json")}
    assert stores == {"convit_tiny_random", "deit_tiny_random"}


def test_the_plan_keeps_cnns_out_and_gap_models_away_from_cls_isolation(tmp_path):
    with pytest.raises(VitclsError, match="CNN baseline"):
        runner.plan(["toy_cnn"], "*", tmp_path, "cpu")
    planned = {j.notebook.stem for j in runner.plan(["toy_gap"], "chapter6", tmp_path, "cpu")}
    assert planned == set(runner.chapters()["chapter6"]) - set(runner.NEEDS_CLS)


def write_notebook(path, source):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# a test page"),
                      nbformat.v4.new_code_cell(source)]
    nbformat.write(notebook, path)
    return path


def test_a_stale_failure_file_goes_when_the_notebook_succeeds(tmp_path, capfd):
    source = tmp_path / "page.ipynb"
    job = runner.Job(write_notebook(source, "raise ValueError('broken')"),
                    tmp_path / "runs" / "page.ipynb", {}, "toy")
    assert runner.execute(job).status == "failed" and "broken" in job.message
    failed = tmp_path / "runs" / "page.failed.ipynb"
    assert failed.is_file()
    write_notebook(source, "print('fixed')")
    assert runner.execute(job).status == "ran"
    assert job.output.is_file() and not failed.exists()
    assert "without encryption" not in capfd.readouterr().err  # the kernel's log stays quiet


INTERRUPT_SCRIPT = """
import signal, sys, threading
from pathlib import Path
from vitcls_utils.running import runner
# as in a terminal: a shell starting this suite in the background (`make test &`) hands its
# children SIGINT ignored, and Python would then never raise KeyboardInterrupt
signal.signal(signal.SIGINT, signal.default_int_handler)
job = runner.Job(Path(sys.argv[1]), Path(sys.argv[2]), {}, "toy")
stop = threading.Event()
try:
    runner._run_threads(stop, 1, [(runner.execute, (job, stop))])
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_ctrl_c_stops_a_run_at_once_and_leaves_no_partial_output(tmp_path):
    import signal
    import time

    marker = tmp_path / "kernel.pid"
    source = write_notebook(tmp_path / "slow.ipynb", (
        f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(120)"))
    output = tmp_path / "runs" / "slow.ipynb"
    script = tmp_path / "run.py"
    script.write_text(INTERRUPT_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(source), str(output)])
    deadline = time.time() + 60
    while not (marker.is_file() and marker.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    assert marker.is_file(), "the kernel never started"
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    took = time.time() - sent
    print(f"stopped {took:.2f} s after Ctrl-C")
    assert took < 5, f"took {took:.1f} s to stop"
    assert sorted(p.name for p in output.parent.iterdir()) == []  # no partial, no failure file
    kernel = Path(f"/proc/{int(marker.read_text())}/status")
    deadline = time.time() + 5  # SIGKILL was sent; give the kernel's exit a moment
    while kernel.exists() and "zombie" not in kernel.read_text().lower() and \
            time.time() < deadline:
        time.sleep(0.05)
    assert not kernel.exists() or "zombie" in kernel.read_text().lower(), \
        "the kernel outlived the run"


def test_a_folder_with_boxes_gets_the_fgbg_notebooks(tmp_path):
    """A folder of ImageNet images has no masks, but boxes give chapter 6 its objects; the
    mask notebooks that take no boxes stay out."""
    def planned(**extra):
        jobs = runner.plan(["ghiasi_b16_384"], "*", tmp_path, "cpu", str(tmp_path),
                           dataset="folder", extra=extra)
        return {j.notebook.stem for j in jobs if j.variant}

    assert not planned() & {"ghiasi_tab2_fgbg", "tab_context_perturbation"}
    with_boxes = planned(boxes="LOC_val_solution.csv")
    assert "ghiasi_tab2_fgbg" in with_boxes and "tab_context_perturbation" not in with_boxes


def test_chapter1_table_on_random_timm_families_and_their_plans(tmp_path):
    """Table 1 runs on random-init DeiT III, EVA-02 and DINOv2 with registers (timm keys, toy
    images, one per class; BEiT's base width costs ~20 s more, so its store is tested in
    test_families instead). The plans keep token removal off BEiT and EVA, and plan for Swin
    only the notebooks that read its last stage alone."""
    notebook = runner.source_notebooks("tab1_identifiability_rate")[0]
    for key in ("timm:deit3_small_patch16_224:random:img_size=64:classes=24",
                "timm:eva02_tiny_patch14_336.mim_in22k_ft_in1k:random:img_size=56:classes=24",
                "timm:vit_small_patch14_reg4_dinov2:random:img_size=56:classes=24"):
        params = {"variant": key, "dataset": "toy", "device": "cpu", "n_per_class": 1,
                  "results_dir": str(tmp_path / "results")}
        job = runner.execute(runner.Job(notebook, tmp_path / "runs" / str(hash(key)) /
                                        notebook.name, params, key), keep_kernel=True)
        assert job.status == "ran", job.message
    kernels.discard_thread_kernel()
    beit = {j.notebook.stem for j in runner.plan(["timm:beit_base_patch16_224:random:classes=24"],
                                                 "chapter2", tmp_path, "cpu", dataset="toy")}
    assert beit == set(runner.chapters()["chapter2"]) - {"tab_context_perturbation"}
    beit = {j.notebook.stem for j in runner.plan(["timm:beit_base_patch16_224:random:classes=24"],
                                                 "chapter4", tmp_path, "cpu", dataset="toy")}
    assert beit == {"fig5_explanation_maps", "fig5_faithfulness_suite"}  # A11, A12 remove tokens
    beit = {j.notebook.stem for j in runner.plan(["timm:beit_base_patch16_224:random:classes=24"],
                                                 "chapter8", tmp_path, "cpu", dataset="toy")}
    assert beit == {"readout_fig1_lens_comparison"}  # the decomposition reads timm's ViT Block
    swin = runner.plan(["timm:swin_tiny_patch4_window7_224:random"], "*", tmp_path, "cpu",
                       dataset="toy")  # read on its last stage: chapters 1-3's store notebooks
    planned = {j.notebook.stem for j in swin if j.variant}
    assert planned == set(notebook_rules.LAST_STAGE_NOTEBOOKS)
