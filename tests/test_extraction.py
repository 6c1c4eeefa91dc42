"""Streaming extraction: the stored reductions equal a direct computation, the model is left
untouched, unreadable images are counted and skipped, and interrupted runs resume exactly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vitcls_utils import StoreError, VitclsError
from vitcls_utils.datasets.kinds import CONVERTED, UNREADABLE, ImageFolderDataset, load_image
from vitcls_utils.stores.extraction import extract, open_store
from vitcls_utils.model.hooks import run_with_cache
from vitcls_utils.model.projection import ClassProjector
from vitcls_utils.model.loading import load_variant

ARRAYS = ("rank", "top1", "true_logit", "pred", "labels", "status")


def reference(model, dataset, kinds=("resid_post", "attn_out", "mlp_out")):
    """Second computation: full cache, full logits, rank by sorting, one image at a time."""
    projector = ClassProjector(model)
    preprocess = model.vitcls_info.variant.preprocess
    ranks, top1s, trues, preds = [], [], [], []
    for item in dataset.items:
        image, _ = load_image(item.path)
        logits, cache = run_with_cache(model, preprocess(image)[None])
        per_site = []
        for i in range(len(model.blocks)):
            for kind in kinds:
                per_site.append(projector(cache[f"blocks.{i}.hook_{kind}"])[0])
        token_logits = torch.stack(per_site)  # [S, N, C]
        order = torch.argsort(token_logits, dim=-1, descending=True, stable=True)
        ranks.append((order == item.label).int().argmax(-1))
        top1s.append(order[..., 0])
        trues.append(token_logits[..., item.label])
        preds.append(int(logits.argmax()))
    return torch.stack(ranks).numpy(), torch.stack(top1s).numpy(), torch.stack(trues).numpy(), preds


def test_store_matches_a_direct_computation(tiny_variant, image_folder, tmp_path,
                                            weights_unchanged):
    model = load_variant("test_tiny", seed=1)
    check = weights_unchanged(model)
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    path = extract(model, dataset, tmp_path / "out", batch_size=4)
    check()
    res = open_store(path)
    n_blocks, n_tokens = len(model.blocks), 17
    assert res.sites[:3] == ["blocks.0.hook_resid_post", "blocks.0.hook_attn_out",
                             "blocks.0.hook_mlp_out"]
    assert res.rank.shape == res.top1.shape == res.true_logit.shape == (9, 3 * n_blocks, n_tokens)
    assert (res.rank.dtype, res.top1.dtype, res.true_logit.dtype) == (np.int16, np.int16, np.float32)
    assert res.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    rank, top1, true, pred = reference(model, dataset)
    np.testing.assert_array_equal(res.rank, rank)
    np.testing.assert_array_equal(res.top1, top1)
    np.testing.assert_allclose(res.true_logit, true, rtol=1e-5, atol=1e-5)
    assert res.pred.tolist() == pred
    assert res.status.tolist().count(CONVERTED) == 2  # the grayscale JPEG and the RGBA PNG
    assert res.by_block("rank", "resid_post").shape == (9, n_blocks, n_tokens)
    ident = res.identifiability("attn_out")
    np.testing.assert_allclose(ident, 1 - rank[:, 1::3] / 10, rtol=1e-6)
    manifest = res.manifest
    assert manifest["config"]["weights_id"] == model.vitcls_info.weights_id
    assert manifest["versions"]["timm"] and manifest["layout"]["n_tokens"] == n_tokens
    assert (path / "items.tsv").read_text().splitlines()[1] == "0/img0.jpg\t0"


def test_unreadable_images_are_skipped_counted_and_reported(tiny_variant, image_folder, tmp_path):
    (image_folder / "1" / "img2.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    model = load_variant("test_tiny")
    path = extract(model, ImageFolderDataset(image_folder, num_classes=10), tmp_path / "o")
    res = open_store(path)
    assert res.n_unreadable == 1 and res.rank.shape[0] == 8
    assert res.manifest["counts"] == {"images": 9, "unreadable": 1, "converted_to_rgb": 2,
                                      "exif_orientation_ignored": 0}
    assert res.manifest["files"]["unreadable"] == ["1/img2.jpg"]  # listed, not only counted
    assert res.manifest["files"]["converted_to_rgb"] == ["1/img0.jpg", "2/img1.png"]
    full = open_store(path, include_unreadable=True)
    assert full.status.tolist()[5] == UNREADABLE and full.rank.shape[0] == 9


def test_complete_store_is_reused_and_force_recomputes(tiny_variant, image_folder, tmp_path):
    model = load_variant("test_tiny")
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    path = extract(model, dataset, tmp_path / "o")
    stamp = (path / "rank.npy").stat().st_mtime_ns
    time.sleep(0.01)
    assert extract(model, dataset, tmp_path / "o") == path
    assert (path / "rank.npy").stat().st_mtime_ns == stamp
    assert extract(model, dataset, tmp_path / "o", force=True) == path
    assert (path / "rank.npy").stat().st_mtime_ns != stamp
    other = extract(load_variant("test_tiny", seed=9), dataset, tmp_path / "o")
    assert other != path and other.parent == path.parent  # another weights id, another store
    only_resid = extract(model, dataset, tmp_path / "o", kinds=["resid_post"])
    assert open_store(only_resid).rank.shape[1] == len(model.blocks)


def test_interrupted_run_resumes_to_identical_arrays(tiny_variant, image_folder, tmp_path):
    model = load_variant("test_tiny", seed=2)
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    clean = open_store(extract(model, dataset, tmp_path / "clean", batch_size=2))

    def interrupt(done):  # rows written, progress not yet saved: the worst moment to die
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(model, dataset, tmp_path / "resumed", batch_size=2, _after_write=interrupt)
    path = next((tmp_path / "resumed" / "test_tiny").iterdir())
    assert json.loads((path / "progress.json").read_text())["done"] == 2
    with pytest.raises(StoreError, match="incomplete"):
        open_store(path)
    resumed = open_store(extract(model, dataset, tmp_path / "resumed", batch_size=5))
    assert resumed.manifest["batch_size"] == 2  # a resumed run keeps its batch size
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(resumed, name), getattr(clean, name))


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import conftest
    from vitcls_utils.datasets.kinds import ImageFolderDataset
    from vitcls_utils.model.loading import load_variant
    from vitcls_utils.model.registry import Variant, register
    from vitcls_utils.stores.extraction import extract
    register(Variant(key="test_tiny", label="t", arch="vit_tiny_patch16_224", tag=None,
        preprocess=conftest.TINY_PREPROCESS, num_classes=10, pooling="token", n_tokens=17,
        dataset="folder", paper_key="-", weights="random", random=True,
        model_kwargs=tuple(conftest.TINY.items())))
    model = load_variant("test_tiny", seed=2)
    slow = float(sys.argv[3])
    extract(model, ImageFolderDataset(sys.argv[1], num_classes=10), sys.argv[2], batch_size=1,
            _after_write=lambda done: time.sleep(slow))
""")


def test_sigkill_mid_run_then_resume_gives_identical_arrays(image_folder, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, TQDM_DISABLE="1")
    cmd = [sys.executable, str(script), str(image_folder)]
    subprocess.run(cmd + [str(tmp_path / "clean"), "0"], check=True, env=env)
    proc = subprocess.Popen(cmd + [str(tmp_path / "killed"), "0.2"], env=env)
    progress = None
    deadline = time.time() + 60
    while time.time() < deadline:
        found = list((tmp_path / "killed").glob("test_tiny/*/progress.json"))
        if found and json.loads(found[0].read_text() or "{}").get("done", 0) >= 3:
            progress = found[0]
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert progress is not None, "the run never got going"
    done = json.loads(progress.read_text())["done"]
    assert 3 <= done < 9, f"killed too late to test resuming (done={done})"
    subprocess.run(cmd + [str(tmp_path / "killed"), "0"], check=True, env=env)
    clean = open_store(next((tmp_path / "clean" / "test_tiny").iterdir()))
    resumed = open_store(progress.parent)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(resumed, name), getattr(clean, name))


def test_bad_arguments(tiny_variant, image_folder, tmp_path):
    model = load_variant("test_tiny")
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    with pytest.raises(VitclsError, match="precision"):
        extract(model, dataset, tmp_path, precision="fp8")
    with pytest.raises(VitclsError, match="load_variant"):
        import timm

        extract(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1,
                                  num_classes=10), dataset, tmp_path)
    with pytest.raises(StoreError, match="not an extraction store"):
        open_store(tmp_path)


def test_two_writers_of_one_store_write_it_once(tiny_variant, image_folder, tmp_path,
                                                monkeypatch):
    """The store's lock: a second extraction of the same configuration started while the first
    runs waits, then finds the store complete (no rows written twice, none left zero)."""
    import threading

    from vitcls_utils.stores import extraction as extract_module

    model = load_variant("test_tiny", seed=1)
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    expected = open_store(extract(model, dataset, tmp_path / "alone", batch_size=2))
    calls = []
    original = extract_module.SiteReducer.__call__

    def counted(self, *args, **kwargs):
        calls.append(1)
        time.sleep(0.05)  # keep the first writer busy while the second arrives
        return original(self, *args, **kwargs)

    monkeypatch.setattr(extract_module.SiteReducer, "__call__", counted)
    paths = []
    workers = [threading.Thread(target=lambda: paths.append(
        extract(model, dataset, tmp_path / "shared", batch_size=2))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(paths) == 2 and paths[0] == paths[1]
    assert len(calls) == 5  # 9 images in batches of 2: one writer's batches only
    shared = open_store(paths[0])
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(shared, name), getattr(expected, name))


def test_a_store_knows_which_images_it_holds(tiny_variant, tmp_path):
    """Issue 35, item 3: `extract --data-dir B` into an --out holding A's store (the same file
    names, other pixels) once returned A's numbers; so did A after a file was rewritten."""
    from conftest import write_image

    def folder(root, seed):
        for label in range(2):
            write_image(root / str(label) / "img.png", seed=seed + label)
        return ImageFolderDataset(root, num_classes=10)

    model = load_variant("test_tiny", seed=3)
    a, b = folder(tmp_path / "a", 0), folder(tmp_path / "b", 50)
    first = extract(model, a, tmp_path / "out", batch_size=2, progress=False)
    second = open_store(extract(model, b, tmp_path / "out", batch_size=2, progress=False))
    assert second.path != first
    assert "content" in second.manifest["config"]["dataset"]
    rank, _, _, _ = reference(model, b)
    np.testing.assert_array_equal(second.rank, rank)
    write_image(tmp_path / "a" / "1" / "img.png", seed=99)
    rewritten = ImageFolderDataset(tmp_path / "a", num_classes=10)
    assert extract(model, rewritten, tmp_path / "out", batch_size=2,
                   progress=False) not in (first, second.path)


def test_a_cnn_is_refused_with_what_it_supports(tiny_cnn_variant, tmp_path):
    """Issue 35, item 10: a CNN once failed with AttributeError 'patch_embed'."""
    from vitcls_utils.datasets.kinds import ToyDataset

    with pytest.raises(VitclsError, match="is a CNN: it has no tokens.*vitcls evaluate"):
        extract(load_variant("test_tiny_cnn"), ToyDataset(n_per_class=1), tmp_path)
    assert not tmp_path.joinpath("test_tiny_cnn").exists()


def test_the_store_computation_is_the_one_its_format_version_names(tmp_path):
    """STORE_FORMAT declares the code that computes a store: a store made by this code equals
    the toy store written before the package moved (tests/fixtures/store_before_layout). When
    the computation changes on purpose, bump STORE_FORMAT (every store is then made again)
    and write the fixture anew."""
    from vitcls_utils.datasets.kinds import ToyDataset
    from vitcls_utils.stores.format import STORE_FORMAT

    fixture = Path(__file__).parent / "fixtures" / "store_before_layout" / "toy"
    kept = next(fixture.iterdir())
    made = open_store(extract(load_variant("toy"), ToyDataset(n_per_class=1), tmp_path,
                              kinds=("resid_post",), progress=False))
    assert made.path.name == kept.name, "the configuration hash of a toy store changed"
    assert json.loads((kept / "manifest.json").read_text())["config"]["format"] == STORE_FORMAT
    same = (made.rank == np.load(kept / "rank.npy")).mean()
    assert same > 0.999, f"{100 * (1 - same):.2f}% of the ranks differ: bump STORE_FORMAT"
    np.testing.assert_allclose(made.true_logit, np.load(kept / "true_logit.npy"), atol=1e-3,
                               err_msg="the logits differ: bump STORE_FORMAT")
