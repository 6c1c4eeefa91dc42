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
        print(_compat.ensure_torchvision_ops(), _compat.shim_state["library"] is None, len(loaded))
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


def test_the_pth_file_runs_the_shim_without_importing_the_package(tmp_path):
    """A copied project must import its own vitcls_utils: the interpreter start-up hook is a
    standalone copy of the shim, not an import of the package that installed it."""
    from vitcls_utils import _compat

    pth = _compat.install_pth(str(tmp_path))
    assert "vitcls_utils" not in pth.read_text()
    out = run(f"""
        import site, sys
        site.addsitedir({str(tmp_path)!r})
        hooks = [type(f).__module__ for f in sys.meta_path]
        print("vitcls_utils" in sys.modules, "{_compat.SHIM_MODULE}" in hooks)
    """)
    assert out == "False True"
