"""Which TensorRT versions the PaCaAttention AOT plugin needs, and what each version can do.

Facts (TensorRT's own release notes and sources): `tensorrt.plugin.aot_impl` (ahead-of-time QDPs) exists
from 10.9; weak typing (BuilderFlag.FP16 & co.) is deprecated from 10.12 and removed in 11.0, where every
network is strongly typed; AOT plugins advertising several tactics are documented from 11.1.
"""

from __future__ import annotations

import re

Version = tuple[int, int]

MIN_VERSION: Version = (10, 9)  # first release with tensorrt.plugin.aot_impl
MULTI_TACTIC_AOT: Version = (11, 1)  # first release documenting several AOT tactics per plugin
STRONG_TYPING_ONLY: Version = (11, 0)  # no weak-typing builder flags at all


class TensorRTUnavailableError(RuntimeError):
    """TensorRT (or what the plugin needs beside it) is missing here."""


class UnsupportedTensorRTError(TensorRTUnavailableError):
    """The installed TensorRT cannot build engines with the PaCaAttention AOT plugin."""


def parse_version(text: str) -> Version:
    """'10.13.3.9' → (10, 13)."""
    match = re.match(r"^\s*(\d+)\.(\d+)", str(text))
    if match is None:
        raise ValueError(f"cannot read a TensorRT version from {text!r}")
    return int(match.group(1)), int(match.group(2))


def require_supported(text: str) -> Version:
    """The (major, minor) of `text`, or UnsupportedTensorRTError naming what is needed."""
    version = parse_version(text)
    if version < MIN_VERSION:
        raise UnsupportedTensorRTError(
            f"TensorRT {text} is too old for the PaCaAttention plugin: its ahead-of-time implementation "
            f"(tensorrt.plugin.aot_impl) needs TensorRT >= {MIN_VERSION[0]}.{MIN_VERSION[1]}. "
            "Upgrade TensorRT (pip install tensorrt-cu13, or a newer NGC TensorRT image).")
    return version


def supports_multi_tactic_aot(version: Version) -> bool:
    return version >= MULTI_TACTIC_AOT
