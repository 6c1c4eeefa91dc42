"""Layer 8, running: the ``vitcls`` command, the notebook runner and its Jupyter kernels, run
files, submitit executors, the offline dry run, the Colab path and the reference outputs.
Imports any layer."""
