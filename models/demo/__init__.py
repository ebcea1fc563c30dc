"""The three small PaCa-ViT demo archs (`archs`) and their committed weights (`weights/`).

How they are trained, evaluated and turned into served artifacts is the top-level `demo` package's job.
"""
