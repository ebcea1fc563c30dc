"""The embedded default's models: data, training, evaluation and `paca demo` / `paca train-demo`.

`data` renders MNIST digit images and multi-digit scenes deterministically, `train` trains the demo
archs registered in `models.demo.archs`, `evaluate` measures held-out accuracy and `cli` wires the
commands. Nothing here imports torch at package import.
"""
