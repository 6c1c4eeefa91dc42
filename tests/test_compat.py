"""The torchvision shim acts only when torchvision's compiled ops fail to load."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_shim_does_nothing_when_the_compiled_ops_load():
    out = run("""
        import torch
        loaded = []
        torch.ops.load_library = lambda path: loaded.append(path)  # a working torchvision
        from vitcls_utils import _compat
        print(_compat.ensure_torchvision_ops(), _compat._state["library"] is None, len(loaded))
    """)
    assert out == "False True 1"


def test_shim_does_nothing_when_the_ops_already_exist():
    out = run("""
        import torch
        def fail(path): raise OSError("no")
        torch.ops.load_library = fail
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        from vitcls_utils import _compat
        print(_compat.ensure_torchvision_ops())
    """)
    assert out == "False"


def test_shim_declares_the_schemas_when_the_ops_fail_and_is_idempotent():
    out = run("""
        import torch
        def fail(path): raise OSError("undefined symbol")
        torch.ops.load_library = fail
        from vitcls_utils import _compat
        first = _compat.ensure_torchvision_ops()
        second = _compat.ensure_torchvision_ops()
        import torchvision
        print(first, second, hasattr(torch.ops.torchvision, "qnms"))
    """)
    assert out == "True True True"
