"""TensorRT's real Python plugin layer (`tensorrt.plugin`) for CPU tests.

The `tensorrt-cu13-bindings` wheel (pinned by version and sha256 below) ships TensorRT's pure-Python
`tensorrt_bindings/plugin/*.py` beside the C extension. `plugin_layer_dir()` downloads the wheel once with
pip (hash-checked) into the ignored `tools/` folder and extracts only those files; `load(version)` imports
them as `tensorrt.plugin` on top of the clearly labelled C-extension stand-in
(`tests.support.tensorrt_standin`). The decorators, validators, TensorDesc/ShapeExpr, AutoTuneCombination,
KernelLaunchParams and the plugin classes that TensorRT calls are therefore TensorRT's own code.

`python -m tests.support.tensorrt_plugin_layer` fetches ahead of a test run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from tests.support import tensorrt_standin
from tests.support.paths import REPO_ROOT

WHEEL_VERSION = "11.4.0.106"
WHEEL_SHA256 = "d072ac2a095e2be749fefc847adfb25d5ebe70303401df62ede8fe67a59f27fc"
# One fixed file of the release (its plugin/*.py are the same in every platform wheel): CPython 3.11, x86-64.
PIP_TARGET = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
              "--platform", "manylinux_2_28_x86_64"]
CACHE = REPO_ROOT / "tools" / "tensorrt-plugin-layer" / WHEEL_VERSION
PACKAGE_PREFIX = "tensorrt_bindings/plugin/"


class PluginLayerUnavailableError(RuntimeError):
    pass


def _fetch_into(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        requirement = Path(tmp) / "requirements.txt"
        requirement.write_text(f"tensorrt-cu13-bindings=={WHEEL_VERSION} --hash=sha256:{WHEEL_SHA256}\n")
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--disable-pip-version-check",
             "-q", *PIP_TARGET, "-r", str(requirement), "-d", tmp],
            capture_output=True, text=True, timeout=300)
        wheels = list(Path(tmp).glob("tensorrt_cu13_bindings-*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise PluginLayerUnavailableError(
                f"could not download tensorrt-cu13-bindings=={WHEEL_VERSION} from PyPI (needed for the TensorRT "
                f"plugin-layer tests): {result.stderr.strip()[-800:]}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:  # pip checked it already; a second look costs nothing
            raise PluginLayerUnavailableError(f"{wheels[0].name}: sha256 {digest}, expected {WHEEL_SHA256}")
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = [m for m in wheel.namelist() if m.startswith(PACKAGE_PREFIX) and m.endswith(".py")]
            for member in members:
                (staging / "plugin").mkdir(exist_ok=True)
                (staging / "plugin" / member[len(PACKAGE_PREFIX):]).write_bytes(wheel.read(member))
        (staging / "SOURCE").write_text(f"{wheels[0].name} sha256={WHEEL_SHA256}\n")
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)


def plugin_layer_dir() -> Path:
    """Folder holding `plugin/` (TensorRT's tensorrt.plugin package), fetched on first use."""
    if not (CACHE / "SOURCE").is_file():
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        _fetch_into(CACHE)
    if not (CACHE / "plugin" / "_lib.py").is_file():
        raise PluginLayerUnavailableError(f"{CACHE} holds no tensorrt.plugin sources; delete it and retry")
    return CACHE


_OWNED_PREFIXES = ("tensorrt", "export.tensorrt.plugin")


@contextlib.contextmanager
def loaded(version: str = WHEEL_VERSION) -> Iterator[ModuleType]:
    """`sys.modules['tensorrt']` = the stand-in reporting `version`, with the real `tensorrt.plugin` importable;
    everything imported under it is removed again on exit (the real plugin registry is per process)."""
    root = plugin_layer_dir()
    saved = {name: module for name, module in sys.modules.items() if name.startswith(_OWNED_PREFIXES)}
    for name in saved:
        del sys.modules[name]
    trt = tensorrt_standin.build_module(version)
    trt.__path__ = [str(root)]  # `import tensorrt.plugin` finds the wheel's plugin/ package here
    sys.modules["tensorrt"] = trt
    try:
        with warnings.catch_warnings():  # TensorRT's docstrings hold invalid escapes ("\\s")
            warnings.simplefilter("ignore", DeprecationWarning)
            importlib.import_module("tensorrt.plugin")
        yield trt
    finally:
        for name in [n for n in sys.modules if n.startswith(_OWNED_PREFIXES)]:
            del sys.modules[name]
        sys.modules.update(saved)
        importlib.invalidate_caches()


if __name__ == "__main__":
    print(plugin_layer_dir(), "(" + (plugin_layer_dir() / "SOURCE").read_text().strip() + ")")
