"""The Jupyter kernels the notebook runner executes in: started once per worker thread and
reused, reset between notebooks, killed at once on Ctrl-C. Pages they run are for the book:
explorers show their static twins there (``VITCLS_BOOK``), and waits on a store are quiet.

A kernel's start-up and the imports of torch, timm and the package cost about 5 s of a 7-10 s
toy notebook. A warm kernel pays them once per worker: after each notebook its namespace is
cleared (``%reset -f``), its figures closed and its warning filters restored, so that every
notebook starts from the state a fresh kernel gives it (tests compare the outputs of both). A
notebook that fails leaves its kernel to be shut down, and the next one gets a fresh kernel.
"""
from __future__ import annotations

import os
import subprocess
import threading
import weakref
from typing import Dict, Optional

from ..stores.format import QUIET_WAITS
from ..report.explorers import BOOK_ENV

#: run once in a new kernel: the warning filters a fresh interpreter has, kept to restore them
SNAPSHOT = "import sys as _s, warnings as _w; _s._vitcls_filters = list(_w.filters); del _s, _w"
#: run after each notebook: a clean namespace, no open figures, warnings shown anew; what
#: survives it (modules, their caches) is then frozen out of the cyclic collector: every later
#: collection, three per reset (``%reset`` collects too), would walk torch's and timm's objects
#: again, 0.7 of the 1.1 s a reset took on the toy
RESET = """\
%reset -f
import gc as _gc, sys as _s, warnings as _w
import matplotlib.pyplot as _p
_p.close("all")
_w.filters[:] = _s._vitcls_filters
_w._filters_mutated()  # forget the warnings already shown: a fresh kernel would show them
del _gc, _s, _w, _p
%reset -f
__import__("gc").collect()
__import__("gc").freeze()
"""

_KERNELS: "weakref.WeakSet" = weakref.WeakSet()  # every kernel manager this process made
_MANAGER_CLASS = None
_LOCAL = threading.local()
_THREADS: Dict[str, Optional[int]] = {"per_kernel": None}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def share_cpus(workers: int) -> Optional[int]:
    """Give each of ``workers`` kernels its share of the CPU cores (torch's and BLAS's thread
    pools), unless the user set the thread count: more threads than cores make OpenMP spin,
    and two 2-thread kernels on 2 cores ran 10x slower than one. Returns the share (None:
    each kernel keeps the default)."""
    already = any(name in os.environ for name in THREAD_VARIABLES)
    share = None if workers <= 1 or already else max(1, (os.cpu_count() or 1) // workers)
    _THREADS["per_kernel"] = share
    return share


def kernel_manager_class():
    """nbclient's kernel manager, remembering each kernel (so that Ctrl-C can stop it at once)
    and sending the kernel's own stderr (ipykernel's log lines, not the notebook's outputs,
    which the notebook keeps) to nothing."""
    global _MANAGER_CLASS
    if _MANAGER_CLASS is None:
        from jupyter_client.manager import AsyncKernelManager

        class TrackedKernelManager(AsyncKernelManager):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                _KERNELS.add(self)

            async def start_kernel(self, **kwargs):
                kwargs.setdefault("stderr", subprocess.DEVNULL)
                env = {**os.environ, **kwargs.get("env", {}), QUIET_WAITS: "1", BOOK_ENV: "1"}
                if _THREADS["per_kernel"] is not None:
                    env.update({name: str(_THREADS["per_kernel"]) for name in THREAD_VARIABLES})
                kwargs["env"] = env
                return await super().start_kernel(**kwargs)

        _MANAGER_CLASS = TrackedKernelManager
    return _MANAGER_CLASS


def kill_kernels() -> int:
    """Kill every kernel this process started that is still running; returns how many."""
    return sum(kill_kernel_of(manager) for manager in list(_KERNELS))


def thread_kernel():
    """This thread's kernel manager (started by the first notebook that runs in it)."""
    manager = getattr(_LOCAL, "manager", None)
    if manager is None:
        manager = _LOCAL.manager = kernel_manager_class()(kernel_name="python3")
    return manager


def discard_thread_kernel() -> None:
    """Shut down this thread's kernel: after a failure, or when the thread's work is done."""
    manager = getattr(_LOCAL, "manager", None)
    _LOCAL.manager = None
    if manager is None:
        return
    from jupyter_core.utils import run_sync

    try:
        if run_sync(manager.is_alive)():
            run_sync(manager.shutdown_kernel)(now=True)
    except Exception:  # noqa: BLE001 - a kernel that is already gone needs nothing more
        kill_kernel_of(manager)


def kill_kernel_of(manager) -> bool:
    """Kill one manager's kernel process if it still runs; True when it did."""
    process = getattr(getattr(manager, "provisioner", None), "process", None)
    if process is None or process.poll() is not None:
        return False
    process.kill()
    return True


def _run_code(client, code: str) -> None:
    """Execute ``code`` in the client's kernel and wait; a failure is raised."""
    from jupyter_core.utils import run_sync

    reply = run_sync(client.kc.execute_interactive)(code, store_history=False, timeout=120,
                                                     output_hook=lambda msg: None)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"kernel reset failed: {reply['content'].get('evalue', '')}")


ENGINE = "vitcls-warm-kernel"


def register_engine() -> str:
    """Register the papermill engine that runs a notebook in this thread's warm kernel; returns
    its name for ``papermill.execute_notebook(engine_name=...)``."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger

    class WarmKernelEngine(NBClientEngine):
        """papermill's nbclient engine, on a kernel that outlives the notebook."""

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False,
                                     stdout_file=None, stderr_file=None, start_timeout=60,
                                     execution_timeout=None, **kwargs):
            kwargs.pop("input_path", None)
            cwd = kwargs.pop("kernel_cwd", None)  # where the kernel starts (the process stays)
            manager = thread_kernel()
            fresh = not manager.has_kernel
            client = PapermillNotebookClient(
                nb_man, km=manager, timeout=execution_timeout, startup_timeout=start_timeout,
                kernel_name=kernel_name, log=logger, log_output=log_output,
                stdout_file=stdout_file, stderr_file=stderr_file,
                resources={"metadata": {"path": cwd}} if cwd else {}, **kwargs)
            try:
                if fresh:  # start it here, to note its warning filters before the notebook
                    client.start_new_kernel()
                    client.start_new_kernel_client()
                    _run_code(client, SNAPSHOT)
                result = client.execute()
                _run_code(client, RESET)
                return result
            finally:
                if client.kc is not None:
                    client.kc.stop_channels()

    papermill_engines.register(ENGINE, WarmKernelEngine)
    return ENGINE


def renumber(notebook) -> None:
    """Number the executed code cells 1, 2, ... as a fresh kernel would (a warm kernel's
    counter goes on from the notebooks before)."""
    count = 0
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            count += 1
            cell.execution_count = count
            for output in cell.outputs:
                if "execution_count" in output:
                    output["execution_count"] = count
