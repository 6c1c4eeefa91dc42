"""Which images Figure 5 explains: the default cases and the paper's own ones."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from vitcls_utils.analysis import explanation_cases
from vitcls_utils.running import dry_run as dryrun
from vitcls_utils.datasets.imagenet_s import ImageNetSDataset


class Stimuli:
    def load(self, i):
        return f"image {i}", 0


def test_default_cases_are_the_first_right_and_first_wrong_rows():
    results = SimpleNamespace(pred=np.array([3, 1, 2, 0]), labels=np.array([0, 1, 2, 1]),
                              image_index=np.array([10, 11, 12, 13]))
    names = [f"class {i}" for i in range(5)]
    cases = explanation_cases.chosen_cases(results, Stimuli(), names, "folder")
    # row 1 is the first right one, row 0 the first wrong one (true and predicted class)
    assert cases == [("#0: true class 0", "image 10", 0), ("#0: predicted class 3", "image 10", 3),
                     ("#1: true class 1", "image 11", 1)]
    chosen = explanation_cases.chosen_cases(results, Stimuli(), names, "folder", images=[2])
    assert chosen == [("#2: true class 2", "image 12", 2)]
    toy = explanation_cases.chosen_cases(results, Stimuli(), [str(i) for i in range(24)], "toy")
    assert [title.split(":")[0] for title, _, _ in toy[-2:]] == ["two objects"] * 2


def test_the_papers_cases_are_found_by_wnid_and_image_number(tmp_path):
    root = dryrun.fabricate_imagenet_s(tmp_path, n_classes=4, n_images=2)
    stimuli = ImageNetSDataset(root, n_per_class=2)
    found = explanation_cases.paper_cases("vit_b32", stimuli)
    assert found, "the fabricated tree holds the paper's case wnids"
    names = stimuli.item_names()
    for case in found:  # image k of a wnid: the k-th stimulus of that class, in order
        of_class = [i for i, name in enumerate(names) if name.split("/")[-2] == case["wnid"]]
        assert case["index"] == of_class[case["image"]]
        assert stimuli.labels[case["index"]] == case["class"]
    impala = [c for c in found if c["wnid"] == "n02422699" and c["image"] == 0]
    assert impala and impala[0]["block"] is not None  # Fig 5a: a per-head map


def test_the_focus_sentence_says_why_there_is_none_without_masks():
    import pandas as pd

    row = pd.Series({"map mass on the object": 0.4567, "object share of tokens": 0.25})
    assert "45.7% of the positive mass" in explanation_cases.focus_sentence(row, "toy")
    assert "25.0% of the tokens" in explanation_cases.focus_sentence(row, "toy")
    assert "no segmentation masks" in explanation_cases.focus_sentence(None, "cifar100")
    import numpy as np

    from vitcls_utils.base.uncertainty import paired_difference

    mass, share = np.r_[0.5, 0.6, 0.4, 0.55], np.r_[0.25, 0.2, 0.3, 0.25]
    text = explanation_cases.focus_sentence(pd.concat([row, pd.Series(
        {"mass_images": mass, "share_images": share})]), "toy")
    assert (f"paired over the same 4 images, is {paired_difference(mass, share).format(3)} "
            "(its 95% CI excludes zero)") in text
