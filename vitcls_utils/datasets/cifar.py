"""CIFAR-100's test split, read from torchvision's pickle without running code (catalogue §3)."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image

from .interface import ImageDataset
from ..base.errors import DatasetError
from .images import OK

class _CifarUnpickler(pickle.Unpickler):
    """Only what CIFAR-100's pickles hold: builtins and numpy arrays, never arbitrary code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # protocol-2 pickles written by Python 3 encode bytes

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a CIFAR pickle")


class Cifar100Dataset(ImageDataset):
    """CIFAR-100 test split, first ``n_per_class`` images of each label in test order; classes
    in order of first appearance in the test set (catalogue §3). No masks.

    Args:
        root: folder holding ``cifar-100-python/`` (torchvision's layout).
        download: fetch it with torchvision first (needs internet; only when asked).
    """

    name = "cifar100"

    def __init__(self, root: Path, n_per_class: Optional[int] = 5, download: bool = False):
        root = Path(root).expanduser()
        test_file = root / "cifar-100-python" / "test"
        if download and not test_file.is_file():
            from torchvision.datasets import CIFAR100

            try:
                CIFAR100(str(root), train=False, download=True)
            except (OSError, RuntimeError) as exc:  # offline, a proxy, a full disk
                raise DatasetError(
                    f"could not download CIFAR-100 into {root} ({exc}); without internet, "
                    "copy cifar-100-python/ (from https://www.cs.toronto.edu/~kriz/cifar-100-"
                    "python.tar.gz) there by hand") from None
        if not test_file.is_file():
            raise DatasetError(
                f"{test_file} not found. Expected torchvision's layout ROOT/cifar-100-python/"
                "{test,meta}; get it with torchvision.datasets.CIFAR100(ROOT, train=False, "
                "download=True), or pass --download, from https://www.cs.toronto.edu/~kriz/"
                "cifar-100-python.tar.gz")
        try:
            with open(test_file, "rb") as handle:
                batch = _CifarUnpickler(handle, encoding="bytes").load()
            data, fine = np.asarray(batch[b"data"], dtype=np.uint8), list(batch[b"fine_labels"])
        except Exception as exc:
            raise DatasetError(f"cannot read {test_file} as CIFAR-100 ({exc})") from None
        keep, seen = [], {}
        for idx, label in enumerate(fine):
            seen.setdefault(label, 0)
            if n_per_class is None or seen[label] < n_per_class:
                keep.append((idx, label))
                seen[label] += 1
        first = {label: order for order, label in enumerate(dict.fromkeys(fine))}
        keep.sort(key=lambda pair: (first[pair[1]], pair[0]))
        self.indices = [idx for idx, _ in keep]
        self._labels = [label for _, label in keep]
        self.images = data[self.indices].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.n_per_class = n_per_class
        self.test_file = test_file
        super().__init__(num_classes=100, root=root)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> List[int]:
        return list(self._labels)

    def item_names(self) -> List[str]:
        return [f"test[{i}]" for i in self.indices]

    def load(self, i: int):
        return Image.fromarray(self.images[i], "RGB"), OK

    def content_files(self) -> List[Path]:
        """The test split's pickle: every image is read from it."""
        return [self.test_file]

    def selection(self) -> str:
        return f"first {self.n_per_class} test images per label, classes by first appearance"
