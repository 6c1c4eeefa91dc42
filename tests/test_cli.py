"""The vitcls command, run as a user runs it: tables, stores, and one-line errors with exit 2."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_image
from vitcls_utils.stores.extraction import open_store
from vitcls_utils.model.registry import VARIANTS

VITCLS = Path(sys.executable).with_name("vitcls")


def vitcls(*args: str, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, TQDM_DISABLE="1", HF_HUB_OFFLINE="1", **(env_extra or {}))
    return subprocess.run([str(VITCLS), *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("jpegs")
    write_image(root / "n01440764" / "a.jpg", seed=1, size=(300, 200))
    write_image(root / "n01443537" / "b.jpg", seed=2, size=(200, 300))
    write_image(root / "n01443537" / "c.jpg", seed=3)
    return root


def test_variants_lists_every_key():
    result = vitcls("variants")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines()[2:]}
    assert {k for k in VARIANTS if not k.startswith("test_")} <= listed
    assert "vit_base_patch16_224.augreg_in21k_ft_in1k" in result.stdout


@pytest.mark.slow
def test_extract_random_b16_on_a_folder_of_jpegs(jpegs, tmp_path):
    result = vitcls("extract", "--variant", "vit_b16_random", "--data", "folder",
                    "--data-dir", str(jpegs), "--out", str(tmp_path), "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    store = Path(re.search(r"^store: (.+)$", result.stdout, re.M).group(1))
    res = open_store(store)
    assert len(res.sites) == 36
    assert res.rank.shape == res.top1.shape == res.true_logit.shape == (3, 36, 197)
    assert res.labels.tolist() == [0, 1, 1] and res.pred.shape == (3,)
    assert "random-init:seed=0" in result.stderr


def write_bad_checkpoint(path: Path) -> Path:
    torch.save({"not_a_vit.weight": torch.zeros(2)}, path)
    return path


@pytest.mark.parametrize("case", ["unknown_variant", "missing_folder", "empty_folder",
                                  "missing_checkpoint", "wrong_keys", "offline_pretrained",
                                  "cifar_without_checkpoint", "bad_option", "bad_perturbation",
                                  "removal_without_masks"])
def test_bad_input_gives_one_line_and_exit_2(case, jpegs, tmp_path):
    args = {"variant": "vit_b32", "data_dir": str(jpegs), "extra": []}
    expected = {
        "unknown_variant": "unknown variant 'vit_b99'",
        "missing_folder": "does not exist",
        "empty_folder": "no images found",
        "missing_checkpoint": "checkpoint file not found",
        "wrong_keys": "does not fit vit_b32",
        "offline_pretrained": "--weights PATH",
        "cifar_without_checkpoint": "Google Drive",
        "bad_option": "invalid choice",
        "bad_perturbation": "unknown perturbation 'self'",
        "removal_without_masks": "needs token labels from segmentation masks",
    }[case]
    if case == "bad_perturbation":
        args["extra"] = ["--random-init", "--perturb", "self"]
    if case == "removal_without_masks":
        args["extra"] = ["--random-init", "--perturb", "keep_context"]
    if case == "unknown_variant":
        args["variant"] = "vit_b99"
    if case == "missing_folder":
        args["data_dir"] = str(tmp_path / "nowhere")
    if case == "empty_folder":
        (tmp_path / "empty" / "n01440764").mkdir(parents=True)
        args["data_dir"] = str(tmp_path / "empty")
    if case == "missing_checkpoint":
        args["extra"] = ["--weights", str(tmp_path / "none.pth")]
    if case == "wrong_keys":
        args["extra"] = ["--weights", str(write_bad_checkpoint(tmp_path / "bad.pth"))]
    if case == "cifar_without_checkpoint":
        args["variant"] = "vit_b16_cifar100"
        (tmp_path / "cifar" / "3").mkdir(parents=True)
        write_image(tmp_path / "cifar" / "3" / "x.png", seed=0, size=(32, 32))
        args["data_dir"] = str(tmp_path / "cifar")
    data = "imagenet-x" if case == "bad_option" else "folder"
    result = vitcls("extract", "--variant", args["variant"], "--data", data, "--data-dir",
                    args["data_dir"], "--out", str(tmp_path / "out"), *args["extra"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_toy_end_to_end_evaluate_agrees_with_the_store(tmp_path):
    """`vitcls evaluate` and the store's .pred give the same top-1 on the toy stimuli."""
    evaluated = vitcls("evaluate", "--variant", "toy", "--data", "toy")
    assert evaluated.returncode == 0, evaluated.stderr
    top1 = float(re.search(r"top-1 ([\d.]+)%", evaluated.stdout).group(1))
    extracted = vitcls("extract", "--variant", "toy", "--data", "toy", "--out", str(tmp_path))
    assert extracted.returncode == 0, extracted.stderr
    res = open_store(Path(re.search(r"^store: (.+)$", extracted.stdout, re.M).group(1)))
    assert res.token_class is not None and res.rank.shape[1:] == (36, 50)
    assert round(100 * res.accuracy, 2) == top1


def test_toy_extract_under_a_perturbation(tmp_path):
    result = vitcls("extract", "--variant", "toy", "--data", "toy", "--n-per-class", "2",
                    "--out", str(tmp_path), "--kinds", "resid_post", "--perturb", "keep_class")
    assert result.returncode == 0, result.stderr
    res = open_store(Path(re.search(r"^store: (.+)$", result.stdout, re.M).group(1)))
    assert res.perturbation["keep"] == "class" and res.rank.shape == (48, 12, 50)
    assert "perturbation: keep_class" in result.stdout
    assert (res.rank[:, -1] == -1).any() and (res.rank[:, -1, 0] >= 0).all()  # [CLS] kept


EDGE_CASES = {  # issue: each once ended in a library traceback, or in exit 0 with wrong numbers
    "batch size 0": (["--batch-size", "0"], "--batch-size: must be at least 1"),
    "negative n per class": (["--n-per-class", "-1"], "--n-per-class: must be at least 1"),
    "device gpu": (["--device", "gpu"], "'gpu' is not a device"),
    "out is a file": (["--out", "{file}"], "is a file; it must be a folder"),
    "data dir for toy": (["--data-dir", "{tmp}"], "--data toy is generated"),
    "unknown variant": (["--variant", "vit_b99"], "unknown variant 'vit_b99'"),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_bad_arguments_are_rejected_before_torch_is_imported(case, tmp_path):
    """Checked at the edge: exit 2, the fix named, and no heavy import (so: fast)."""
    extra, expected = EDGE_CASES[case]
    (tmp_path / "afile").write_text("")
    extra = [e.format(file=tmp_path / "afile", tmp=tmp_path) for e in extra]
    argv = ["extract", "--variant", "toy", "--data", "toy", "--out", str(tmp_path / "o")]
    argv += extra
    code = ("import sys\nfrom vitcls_utils.running import cli\ntry:\n    rc = cli.main(%r)\n"
            "except SystemExit as e:\n    rc = e.code\nprint('torch' in sys.modules, rc)" % argv)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["False", "2"], result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_dataset_arguments_that_would_be_ignored_are_refused(tmp_path, monkeypatch):
    from vitcls_utils import DatasetError
    from vitcls_utils.datasets.kinds import build_dataset

    write_image(tmp_path / "imgs" / "n01440764" / "a.jpg", seed=1)
    with pytest.raises(DatasetError, match="--split applies to"):
        build_dataset("folder", str(tmp_path / "imgs"), 1000, split="test")
    with pytest.raises(DatasetError, match="n_per_class must be a positive"):
        build_dataset("toy", None, 24, n_per_class=-1)
    with pytest.raises(DatasetError, match="are ImageNet wnids.*100 classes.*0..99"):
        build_dataset("folder", str(tmp_path / "imgs"), 100)
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(DatasetError, match="could not download CIFAR-100.*by hand"):
        build_dataset("cifar100", str(tmp_path / "cifar"), 100, download=True)


def test_a_refused_pickle_says_how_to_convert_it(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo never",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    from vitcls_utils import WeightsError
    from vitcls_utils.model.loading import read_state_dict

    with pytest.raises(WeightsError) as error:
        read_state_dict(tmp_path / "evil.pt")
    message = str(error.value)
    assert "safetensors" in message and "system" in message
    assert "In PyTorch 2.6" not in message  # torch's own advice is not passed on


def test_run_refuses_a_results_dir_that_is_a_file(tmp_path, capsys):
    from vitcls_utils.running.cli import main

    (tmp_path / "afile").write_text("")
    code = main(["run", "--variants", "toy", "--notebooks", "tab1*", "--results-dir",
                 str(tmp_path / "afile")])
    assert code == 2 and "--results-dir" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["/dev/null/x", "loop/x", "full"])
def test_an_out_that_cannot_take_the_store_is_refused_before_the_model_loads(out, tmp_path,
                                                                            monkeypatch, capsys):
    """Issue 35, item 11: an unwritable --out once raised an OSError traceback after the
    model had loaded (and item 8: a disk without room for the store)."""
    from vitcls_utils.model import loading
    from vitcls_utils.running.cli import main
    from vitcls_utils.stores import format as store_format

    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    if out == "full":
        usage = shutil.disk_usage(tmp_path)._replace(free=1000)
        monkeypatch.setattr(store_format.shutil, "disk_usage", lambda path: usage)
    monkeypatch.setattr(loading, "load_variant", lambda *a, **k: pytest.fail("model loaded"))
    target = out if out.startswith("/") else str(tmp_path / out)
    assert main(["extract", "--variant", "toy", "--data", "toy", "--n-per-class", "1",
                 "--out", target]) == 2
    err = capsys.readouterr().err
    expected = ("has 0.0 MiB free and this needs 0.3 MiB" if out == "full"
                else "cannot be written (")
    assert expected in err and err.count("\n") == 1, err


def test_the_room_a_store_needs_is_what_it_takes(tiny_variant, image_folder, tmp_path):
    from vitcls_utils.datasets.kinds import ImageFolderDataset
    from vitcls_utils.model.loading import load_variant
    from vitcls_utils.stores.extraction import DEFAULT_KINDS, extract
    from vitcls_utils.stores.reader import store_room

    data = ImageFolderDataset(image_folder, num_classes=10)
    needed = store_room(tmp_path, "test_tiny", data, DEFAULT_KINDS)
    path = extract(load_variant("test_tiny"), data, tmp_path, batch_size=9, progress=False)
    assert needed == sum(f.stat().st_size - 128 for f in path.glob("*.npy"))  # less headers


@pytest.mark.parametrize("variant, notebooks, chapter", [
    ("convit_tiny_random", "chapter2", "chapter7"),
    ("vit_orig_b16_in21k_random", "tab1*", "chapter5")])
def test_a_run_that_plans_nothing_says_why(variant, notebooks, chapter, tmp_path, capsys):
    """Issue 35, item 15: once "0 ran, 0 skipped, 0 failed" and exit 0."""
    from vitcls_utils.running.cli import main

    write_image(tmp_path / "data" / "n01440764" / "a.jpg", seed=1)
    code = main(["run", "--variants", variant, "--notebooks", notebooks, "--data", "folder",
                 "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and f"nothing to run: no notebook matching {notebooks!r}" in err, err
    assert f"{variant} on folder has pages in {chapter}" in err and err.count("\n") == 1


@pytest.mark.parametrize("variant, expected", [
    ("toy_cnn", "toy_cnn is a CNN: it has no tokens to project onto class space"),
    ("resnet50_tv_random", "`vitcls evaluate --variant resnet50_tv_random` gives its top-1"),
    ("clip_b32_random", "clip_b32_random has no class head (a CLIP image tower")])
def test_what_a_family_cannot_extract_is_refused_before_the_model_loads(variant, expected,
                                                                        tmp_path, capsys,
                                                                        monkeypatch):
    """Issue 35, item 10: a CNN once failed with AttributeError 'patch_embed'."""
    from vitcls_utils.model import loading
    from vitcls_utils.running.cli import main

    monkeypatch.setattr(loading, "load_variant", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["extract", "--variant", variant, "--data", "toy", "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
