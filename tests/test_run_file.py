"""Run files: one clear error naming every problem before anything runs; entries per variant."""
from __future__ import annotations

import pytest

from vitcls_utils.running import dry_run as dryrun, run_file as runfile, runner
from vitcls_utils.running.run_file import RunFileError


def write(tmp_path, text):
    path = tmp_path / "run.yml"
    path.write_text(text)
    return path


def test_a_bad_run_file_names_every_problem_at_once(tmp_path):
    bad_weights = tmp_path / "bad.safetensors"
    bad_weights.write_bytes(b"not a checkpoint")
    path = write(tmp_path, f"""
profile: papers
colour: blue
data_dirs:
  imagenet-s: {tmp_path}/nowhere
variants:
  vit_b99: {{}}
  vit_b32: {{}}
  vit_b16_cifar100: {{}}
  vit_b16: {{weights: {tmp_path}/missing.pt, batch_size: 0}}
  vit_b16_gap: {{weights: {bad_weights}}}
""")
    with pytest.raises(RunFileError) as caught:
        runfile.load_run_file(path)
    message = str(caught.value)
    for expected in ("unknown profile 'papers'", "unknown key 'colour'", "unknown variant 'vit_b99'",
                     "vit_b32: data_dir not found", "vit_b16_cifar100: needs weights",
                     "vit_b16_cifar100: runs on cifar100 and needs data_dir",
                     "vit_b16: weights file not found", "batch_size must be a positive integer",
                     "vit_b16_gap: weights bad.safetensors do not fit", "nothing was run"):
        assert expected in message, (expected, message)


def test_weights_of_another_architecture_are_refused_by_shape(tmp_path):
    weights = dryrun.write_random_weights("toy_gap", tmp_path / "gap.safetensors")
    path = write(tmp_path, f"variants:\n  toy: {{weights: {weights}}}\n")
    with pytest.raises(RunFileError, match="toy: weights gap.safetensors do not fit"):
        runfile.load_run_file(path)


def test_entries_are_per_variant_and_the_cli_fails_before_running(tmp_path, capsys):
    from vitcls_utils.running.cli import main

    data = dryrun.fabricate_imagenet_s(tmp_path / "data", n_classes=2, n_images=5)
    cifar = dryrun.fabricate_cifar100(tmp_path / "cifar", n_labels=2, n_images=1)
    weights = dryrun.write_random_weights("toy", tmp_path / "toy.safetensors")
    path = write(tmp_path, f"""
profile: [corrected, paper]
controls: true
data_dirs: {{imagenet-s: {data}, cifar100: {cifar}}}
variants:
  toy: {{weights: {weights.name}}}
  vit_b32_random: {{}}
  vit_b16_cifar100_random: {{}}
""")
    parsed = runfile.load_run_file(path)
    by_key = {r.key: r for r in parsed.variants}
    assert by_key["toy"].weights == str(weights) and by_key["toy"].data_dir is None
    assert by_key["vit_b32_random"].data_dir == str(data)
    assert by_key["vit_b16_cifar100_random"].data_dir == str(cifar)  # never ImageNet's (B20)
    assert "toy_random" in by_key  # controls: true
    jobs = runner.plan(parsed.variants, "tab1*", tmp_path / "r", "cpu", profile="paper",
                      runs_dir=tmp_path / "runs")
    # "paper", the profile's old name, runs the authors' settings
    assert {j.output.parent.name for j in jobs} >= {"toy-authors",
                                                    "vit_b16_cifar100_random-authors"}
    assert all(j.parameters["profile"] == "authors" for j in jobs)
    assert jobs[0].parameters["weights"] == str(weights)
    bad = write(tmp_path, "variants:\n  vit_b16_cifar100: {}\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "needs weights" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_an_unset_environment_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("VITCLS_TEST_UNSET", raising=False)
    path = write(tmp_path, "data_dirs:\n  imagenet-s: ${VITCLS_TEST_UNSET}\n"
                           "variants: {vit_b32_random: {}}\n")
    with pytest.raises(RunFileError, match="environment variable VITCLS_TEST_UNSET is not set"):
        runfile.load_run_file(path)


def test_the_shipped_paper_run_file_names_the_seven_variants(monkeypatch, tmp_path):
    from pathlib import Path

    shipped = Path(runfile.__file__).resolve().parents[2] / "data" / "runs" / "paper.yml"
    monkeypatch.setenv("IMAGENET_S", str(tmp_path / "absent"))
    monkeypatch.setenv("CIFAR100_DIR", str(tmp_path / "absent"))
    monkeypatch.setenv("CIFAR100_WEIGHTS", str(tmp_path / "absent.pt"))
    with pytest.raises(RunFileError) as caught:  # no data here: every variant says so
        runfile.load_run_file(shipped)
    message = str(caught.value)
    from vitcls_utils.model.registry import PAPER_KEYS

    for key in PAPER_KEYS:
        assert f"  - {key}: " in message
    assert "vit_b16_cifar100: weights file not found" in message


def test_the_shipped_vit_run_file_names_the_original_checkpoints(monkeypatch, tmp_path):
    from pathlib import Path

    from vitcls_utils.model.registry import ORIGINAL_KEYS

    shipped = Path(runfile.__file__).resolve().parents[2] / "data" / "runs" / "vit.yml"
    from vitcls_utils.running.dry_run import fabricate_imagenet_s

    monkeypatch.setenv("IMAGENET_S", str(fabricate_imagenet_s(tmp_path, n_classes=1)))
    loaded = runfile.load_run_file(shipped)
    assert [v.key for v in loaded.variants if not v.key.endswith("_random")] == list(ORIGINAL_KEYS)
    assert loaded.notebooks == "chapter5" and loaded.parameters["n_images"] == 128
    assert runfile.expand_variants(["vit_original"]) == list(ORIGINAL_KEYS)


def test_the_shipped_ghiasi_run_file_names_the_vits_and_towers_not_the_cnns(monkeypatch,
                                                                           tmp_path):
    from pathlib import Path

    from vitcls_utils.running.dry_run import fabricate_imagenet_s
    from vitcls_utils.model.registry import GHIASI_KEYS, get_variant

    shipped = Path(runfile.__file__).resolve().parents[2] / "data" / "runs" / "ghiasi.yml"
    monkeypatch.setenv("IMAGENET_S", str(fabricate_imagenet_s(tmp_path, n_classes=1)))
    loaded = runfile.load_run_file(shipped)
    vits = [k for k in GHIASI_KEYS if get_variant(k).is_vit]
    assert [v.key for v in loaded.variants if not v.key.endswith("_random")] == vits
    assert runfile.expand_variants(["ghiasi"]) == vits
    cnns = set(GHIASI_KEYS) - set(vits)
    assert cnns == set(loaded.parameters["baselines"]) == {"resnet50_tv", "resnet152_tv",
                                                           "densenet121_tv"}
    assert loaded.notebooks == "chapter6" and loaded.parameters["images_per_class"] is None


def test_run_with_an_unknown_data_kind_names_the_kind(capsys):
    """It once said "pass --data-dir", sending the user the wrong way."""
    from vitcls_utils.running.cli import main

    assert main(["run", "--variants", "vit_b32", "--data", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'imagenet'" in err and "--data-dir" not in err


def test_the_shipped_convit_run_file_names_the_convits_not_their_deits(monkeypatch, tmp_path):
    from pathlib import Path

    from vitcls_utils.running.dry_run import fabricate_imagenet_s

    shipped = Path(runfile.__file__).resolve().parents[2] / "data" / "runs" / "convit.yml"
    monkeypatch.setenv("IMAGENET_S", str(fabricate_imagenet_s(tmp_path, n_classes=1)))
    loaded = runfile.load_run_file(shipped)
    keys = ["convit_tiny", "convit_small", "convit_base"]
    assert [v.key for v in loaded.variants if not v.key.endswith("_random")] == keys
    assert [v.key for v in loaded.variants if v.key.endswith("_random")] == [
        f"{k}_random" for k in keys]
    assert runfile.expand_variants(["convit"]) == keys
    assert loaded.notebooks == "chapter7" and loaded.parameters["n_images"] == 1024


STRICT_CASES = {  # issue 35, items 7, 9 and 13: each once dropped content, passed, or crashed
    "duplicate variant": ("variants:\n  toy: {}\n  toy: {n_per_class: 2}\n",
                          "line 3: duplicate key 'toy' (first on line 2)"),
    "second variants section": ("variants: {toy: {}}\nvariants: {toy_gap: {}}\n",
                                "line 2: duplicate key 'variants' (first on line 1)"),
    "unknown parameter": ("parameters: {n_pionts: 12}\nvariants: {toy: {}}\n",
                          "parameters: no notebook has a parameter 'n_pionts' (did you mean "
                          "'n_points'?)"),
    "parameter type": ("parameters: {seed: abc}\nvariants: {toy: {}}\n",
                       "parameters: seed must be a whole number (the notebooks' default is 0), "
                       "not 'abc'"),
    "device list": ("device: [cpu]\nvariants: {toy: {}}\n", "device must be text, not ['cpu']"),
    "results_dir list": ("results_dir: [a, b]\nvariants: {toy: {}}\n",
                         "results_dir must be text, not ['a', 'b']"),
    "entry type": ("variants: {toy: {batch_size: true}}\n",
                   "toy: batch_size must be a whole number, not True"),
    "unknown top key": ("varaints: {toy: {}}\n", "unknown key 'varaints' (did you mean "
                        "'variants'?)"),
    "alias bomb": ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c]\n"
                   "e: &e [*d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e]\n"
                   "g: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nvariants: {toy: {}}\n",
                   "expands to more than 100000 values"),
}


@pytest.mark.parametrize("case", sorted(STRICT_CASES))
def test_a_run_file_is_read_strictly(tmp_path, case):
    text, expected = STRICT_CASES[case]
    with pytest.raises(RunFileError) as caught:
        runfile.load_run_file(write(tmp_path, text))
    lines = str(caught.value).splitlines()
    assert any(line == f"  - {expected}" or line.startswith(f"  - {expected}")
               for line in lines[1:]), lines
    assert all(line.startswith("  - ") for line in lines[1:])  # one line per problem


def test_an_alias_bomb_under_parameters_and_a_huge_file_are_refused_at_once(tmp_path):
    """Issue 35, item 9: `vitcls run` hung on the first, and took 155 s for a 19 MB file."""
    import time

    bomb = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10) if i else 'x'}]\n"
                   for i in range(9))
    started = time.perf_counter()
    with pytest.raises(RunFileError, match="expands to more than"):
        runfile.load_run_file(write(tmp_path, "parameters:\n  n_points:\n" + "".join(
            "    " + line for line in bomb.splitlines(True)) + "variants: {toy: {}}\n"))
    big = write(tmp_path, "variants: {toy: {}}\n" + "# padding\n" * 200_000)
    with pytest.raises(RunFileError, match="is 1.9 MiB; a run file is at most 1 MiB"):
        runfile.load_run_file(big)
    assert time.perf_counter() - started < 5


def test_a_run_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    from vitcls_utils.running.cli import main

    path = tmp_path / "run.yml"
    path.write_bytes("variants: {toy: {}}\n# caf\u00e9\n".encode("latin-1"))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is not UTF-8 text (byte 0xe9 at offset 25): save it as UTF-8" in err
    assert "Traceback" not in err


def test_a_random_control_without_data_is_told_it_can_run_offline_on_the_toy_set():
    runs = runfile.from_arguments(["timm:deit3_small_patch16_224:random", "vit_b16"], None, None)
    problems = [p for run in runs for p in runfile.entry_problems(run)]
    assert any("deit3" in p and "needs data_dir (--data-dir" in p and "--data toy" in p
               for p in problems), problems
    assert any(p.startswith("vit_b16:") and "--data toy" not in p for p in problems), problems
