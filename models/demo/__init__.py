"""Small PaCa-ViT demo models trained on real MNIST digits, so the default server gives meaningful answers.

`archs` registers the three demo archs, `data` renders digit images and multi-digit scenes
deterministically, `train` trains them, `evaluate` measures held-out accuracy and `cli` wires
`paca train-demo` and `paca demo ensure|eval`. Nothing here imports torch at package import.
"""
