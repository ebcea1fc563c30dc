"""The GPU checks of scripts/gpu-check.sh, each recorded in one JSON summary (ran / skipped-why / passed /
figures), written again after every check so a killed run still leaves what it measured.

Checks, most valuable first, inside one time budget (default 420 s):
  environment       GPU, driver, package versions
  triton_kernel     the OpenAI Triton PaCaAttention kernel on CUDA vs a float64 PyTorch reference
  aot_kernel        the TensorRT plugin's AOT PTX, launched through the CUDA driver exactly as a QDP AOT
                    plugin layer is (args q, k, v, N, M, out; the plugin's grid, block and shared memory),
                    vs the reference; and whether a tactic over 48 KiB of shared memory launches without opt-in
  torch_backend     the service's torch backend on CUDA (fused kernel) vs the same backend on CPU
  onnxruntime_cuda  ONNX Runtime's CUDA provider (if onnxruntime-gpu is there or installs) vs its CPU provider
  tensorrt_engine   tests/export/test_tensorrt_gpu.py (needs TensorRT; normally absent on such machines)
  kernel_benchmark  benchmarks/kernel_attention.py on PaCa-Tiny shapes (timings, for the docs)
`--cpu` (no GPU): the same script with CUDA checks skipped, the kernel cases under TRITON_INTERPRET=1 and
the AOT compile without launch: it exercises the script itself, not the GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Skip(Exception):
    """Raised by a check that cannot run here; the message is the reason."""


class Summary:
    """The JSON summary: one entry per check, rewritten to `path` after every check."""

    def __init__(self, path: Path, mode: str, budget_s: float) -> None:
        self.path, self.started = path, time.monotonic()
        self.budget_s = budget_s
        self.data: dict[str, Any] = {"mode": mode, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "budget_s": budget_s, "checks": {}}

    def remaining(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def run(self, name: str, check: Callable[[], dict[str, Any]], needs_s: float = 0) -> None:
        entry: dict[str, Any] = {"ran": False, "passed": None, "reason": None, "figures": {}}
        start = time.monotonic()
        if self.remaining() < needs_s:
            entry["reason"] = f"time budget: {self.remaining():.0f} s left, the check needs ~{needs_s:.0f} s"
        else:
            try:
                figures = check()
                entry.update(ran=True, figures=figures, passed=bool(figures.pop("passed", True)))
            except Skip as exc:
                entry["reason"] = str(exc)
            except Exception as exc:  # a broken check is a failed check, with its traceback
                entry.update(ran=True, passed=False, reason=f"{type(exc).__name__}: {exc}",
                             figures={"traceback": traceback.format_exc()[-3000:]})
        entry["seconds"] = round(time.monotonic() - start, 2)
        entry["status"] = "skipped" if not entry["ran"] else ("passed" if entry["passed"] else "failed")
        self.data["checks"][name] = entry
        reason = f" — {entry['reason']}" if entry["reason"] else ""
        print(f"[{entry['status']:7}] {name} ({entry['seconds']} s){reason}", flush=True)
        self.write()

    def write(self) -> None:
        checks = self.data["checks"].values()
        self.data["elapsed_s"] = round(time.monotonic() - self.started, 1)
        self.data["overall"] = "failed" if any(c["status"] == "failed" for c in checks) else "passed"
        self.data["counts"] = {s: sum(c["status"] == s for c in checks) for s in ("passed", "failed", "skipped")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        tmp.replace(self.path)


FORCE_CPU = False  # --cpu: behave as if there were no GPU


def cuda_or_skip():
    import torch

    if FORCE_CPU or not torch.cuda.is_available():
        raise Skip("no CUDA device")
    return torch


def reference_attention(q, k, v, heads: int, scale: float):
    """Float64 per-head softmax(q kᵀ·scale) v, written independently of the kernel."""
    q, k, v = q.double(), k.double(), v.double()
    b, n, c = q.shape
    d = c // heads
    qh, kh, vh = (t.reshape(b, -1, heads, d).permute(0, 2, 1, 3) for t in (q, k, v))
    weights = (qh @ kh.transpose(-1, -2) * scale).softmax(-1)
    return (weights @ vh).permute(0, 2, 1, 3).reshape(b, n, c)


# (batch, heads, N, M, head_dim): N not a multiple of any block; PaCa's head dims; one PaCa-Tiny 224² stage.
KERNEL_CASES = [(1, 2, 49, 100, 24), (2, 3, 70, 49, 40), (1, 1, 33, 7, 48), (3, 1, 5, 2, 24), (8, 8, 196, 100, 40)]
TOLERANCE = {"float32": 1e-5, "float16": 3e-3, "bfloat16": 3e-2}


def check_environment() -> dict[str, Any]:
    figures: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("torch", "triton", "onnx", "onnxruntime", "tensorrt", "pydantic"):
        try:
            figures[name] = importlib.import_module(name).__version__
        except Exception as exc:
            figures[name] = f"not available ({type(exc).__name__}: {exc})"[:200]
    with contextlib.suppress(Exception):
        figures["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30).stdout.strip()
    import torch

    figures["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        figures["device"] = torch.cuda.get_device_name()
        figures["capability"] = "{}.{}".format(*torch.cuda.get_device_capability())
    figures["triton_interpret"] = os.environ.get("TRITON_INTERPRET") == "1"
    return figures


def check_triton_kernel(device: str, cases: list[tuple[int, ...]]) -> dict[str, Any]:
    import torch

    from models.kernels.attention_triton import CONFIGS
    from models.kernels.torch_ops import triton_attention

    results, passed = [], True
    runs = [(case, "float32", None) for case in cases]
    runs += [(cases[1], "float32", config) for config in CONFIGS]  # every tactic, M > BLOCK_M too
    runs += [(cases[0], "float16", None)] + ([(cases[0], "bfloat16", None)] if device == "cuda" else [])
    for (batch, heads, n, m, head_dim), dtype_name, config in runs:
        g = torch.Generator().manual_seed(batch * 1000 + n)
        c = heads * head_dim
        dtype = getattr(torch, dtype_name)
        q, k, v = (torch.randn(batch, rows, c, generator=g).to(device, dtype) for rows in (n, m, m))
        out = torch.full_like(q, float("nan"))
        triton_attention(q, k, v, heads, head_dim ** -0.5, out=out, config=config)
        error = (out.double().cpu() - reference_attention(q, k, v, heads, head_dim ** -0.5).cpu()).abs().max().item()
        ok = math.isfinite(error) and error <= TOLERANCE[dtype_name]
        passed &= ok
        results.append({"case": [batch, heads, n, m, head_dim], "dtype": dtype_name,
                        "config": None if config is None else [config.block_n, config.block_m, config.num_warps],
                        "max_abs_error": error, "tolerance": TOLERANCE[dtype_name], "passed": ok})
    return {"passed": passed, "device": device, "cases": results}


def check_triton_kernel_interpreted(results: Path) -> dict[str, Any]:
    """The kernel check on CPU under Triton's interpreter, which must be on before triton is imported."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, __file__, "--results", str(results), "--kernel-cases-interpreted"],
                         capture_output=True, text=True, timeout=300, env=env)
    if run.returncode != 0:
        raise RuntimeError(run.stderr.strip()[-1500:])
    return json.loads(run.stdout.strip().splitlines()[-1])


class _Driver:
    """The few CUDA driver calls a TensorRT AOT plugin layer makes: load PTX, find the entry, launch."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libcuda.so.1")

    def call(self, name: str, *args: Any) -> int:
        return int(getattr(self.lib, name)(*args))

    def load(self, ptx: str, entry: str) -> tuple[ctypes.c_void_p, ctypes.c_void_p]:
        module, function = ctypes.c_void_p(), ctypes.c_void_p()
        status = self.call("cuModuleLoadData", ctypes.byref(module), ctypes.c_char_p(ptx.encode()))
        if status:
            raise RuntimeError(f"cuModuleLoadData failed ({status})")
        status = self.call("cuModuleGetFunction", ctypes.byref(function), module, entry.encode())
        if status:
            raise RuntimeError(f"cuModuleGetFunction({entry}) failed ({status})")
        return module, function

    def launch(self, function, grid: tuple[int, int, int], block_x: int, shared: int, stream: int,
               args: list[Any]) -> int:
        pointers = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])  # void** kernelParams
        return self.call("cuLaunchKernel", function, ctypes.c_uint(grid[0]), ctypes.c_uint(grid[1]),
                         ctypes.c_uint(grid[2]), ctypes.c_uint(block_x), ctypes.c_uint(1), ctypes.c_uint(1),
                         ctypes.c_uint(shared), ctypes.c_void_p(stream), pointers, None)


def check_aot_kernel(on_gpu: bool) -> dict[str, Any]:
    """The plugin's AOT kernels, compiled like `aot_impl` does; on a GPU also launched like TensorRT does."""
    from export.tensorrt import plugin_logic as logic
    from export.tensorrt.aot_kernel import compile_attention

    batch, heads, n, m, head_dim = 8, 8, 196, 100, 40  # PaCa-Tiny stage 3 at 224²
    channels, scale = heads * head_dim, head_dim ** -0.5
    if on_gpu:
        import torch

        major, minor = torch.cuda.get_device_capability()
        capability = major * 10 + minor
    else:
        capability = 90
    kernels = {(element, tactic): compile_attention(element, heads, channels, scale, tactic, capability)
               for element in ("fp32", "fp16") for tactic in logic.tactic_ids()}
    figures: dict[str, Any] = {"capability": capability, "shape": [batch, heads, n, m, head_dim], "kernels": [
        {"element": e, "tactic": t, "entry": k.name, "shared_bytes": k.shared_bytes, "block_x": k.block_x,
         "fits_48k": k.shared_bytes <= logic.SHARED_MEMORY_LIMIT} for (e, t), k in kernels.items()]}
    if not on_gpu:
        raise_if_names_collide(kernels)
        figures["launched"] = "no (no CUDA device): compile only"
        return figures
    import torch

    raise_if_names_collide(kernels)
    driver, passed, launches = _Driver(), True, []
    stream = torch.cuda.current_stream().cuda_stream
    for (element, tactic), kernel in kernels.items():
        dtype = torch.float32 if element == "fp32" else torch.float16
        g = torch.Generator(device="cuda").manual_seed(tactic)
        q = torch.randn(batch, n, channels, device="cuda", generator=g).to(dtype)
        k = torch.randn(batch, m, channels, device="cuda", generator=g).to(dtype)
        v = torch.randn(batch, m, channels, device="cuda", generator=g).to(dtype)
        out = torch.full_like(q, float("nan"))
        grid = (*logic.launch_grid(batch, n, heads, tactic), 1)
        args = [ctypes.c_uint64(q.data_ptr()), ctypes.c_uint64(k.data_ptr()), ctypes.c_uint64(v.data_ptr()),
                ctypes.c_int32(n), ctypes.c_int32(m), ctypes.c_uint64(out.data_ptr())]
        module, function = driver.load(kernel.ptx, kernel.name)
        status = driver.launch(function, grid, kernel.block_x, kernel.shared_bytes, stream, args)
        record: dict[str, Any] = {"element": element, "tactic": tactic, "shared_bytes": kernel.shared_bytes,
                                  "launch_status": status}
        if status and kernel.shared_bytes > logic.SHARED_MEMORY_LIMIT:
            # What TensorRT would meet: refused without opt-in. Opt in here to show the kernel itself is right.
            record["refused_without_opt_in"] = True
            # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
            driver.call("cuFuncSetAttribute", function, ctypes.c_int(8), ctypes.c_int(kernel.shared_bytes))
            status = driver.launch(function, grid, kernel.block_x, kernel.shared_bytes, stream, args)
            record["launch_status_with_opt_in"] = status
        torch.cuda.synchronize()
        if status == 0:
            error = (out.double() - reference_attention(q, k, v, heads, scale)).abs().max().item()
            tolerance = 1e-5 if element == "fp32" else 3e-3
            record.update(max_abs_error=error, passed=math.isfinite(error) and error <= tolerance)
        else:
            record["passed"] = False
        if kernel.shared_bytes <= logic.SHARED_MEMORY_LIMIT or not record.get("refused_without_opt_in"):
            passed &= record["passed"]
        driver.call("cuModuleUnload", module)
        launches.append(record)
    figures.update(passed=passed, launches=launches)
    return figures


def raise_if_names_collide(kernels: dict) -> None:
    names = [k.name for k in kernels.values()]
    if len(set(names)) != len(names):
        raise AssertionError(f"PTX entry names collide: {names}")


def check_torch_backend() -> dict[str, Any]:
    """The torch backend on CUDA (fused Triton attention) vs the same backend on CPU (PyTorch math)."""
    torch = cuda_or_skip()
    import numpy as np
    from safetensors.torch import save_file

    from models import build

    workdir = Path(os.environ.get("GPU_CHECK_WORKDIR", "/tmp/paca-gpu-check"))
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    checkpoint = workdir / "demo_digits_cls.safetensors"
    save_file({k: v.contiguous() for k, v in build("demo_digits_cls").state_dict().items()}, str(checkpoint))
    pixels = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    try:
        from service.backends.torch_backend import TorchBackend
        from service.repository import ModelConfig
    except ImportError as exc:  # the lent machines have no pydantic: run the backend's own steps instead
        from models.kernels.torch_ops import use_triton_attention

        reference_model = build("demo_digits_cls", checkpoint)
        fused_model = build("demo_digits_cls", checkpoint)
        fused = use_triton_attention(fused_model)
        fused_model.cuda()
        with torch.no_grad():
            want = reference_model(torch.from_numpy(pixels)).numpy()
            got = fused_model(torch.from_numpy(pixels).cuda()).cpu().numpy()
        path = f"models.build + use_triton_attention ({type(exc).__name__}: {exc})"
    else:
        def backend(device: str) -> Any:
            config = ModelConfig(name="cls", backend="torch", arch="demo_digits_cls", checkpoint=checkpoint,
                                 options={"device": device})
            return TorchBackend(config)

        cuda_backend = backend("cuda")
        fused = cuda_backend.fused_attention
        want = backend("cpu").infer({"pixel_values": pixels}, ["logits"])["logits"]
        got = cuda_backend.infer({"pixel_values": pixels}, ["logits"])["logits"]
        path = "service.backends.torch_backend.TorchBackend"
    error = float(np.abs(got - want).max())
    return {"passed": fused > 0 and error <= 1e-4, "path": path, "fused_attention_cores": fused,
            "batch": 8, "max_abs_error_vs_cpu": error, "tolerance": 1e-4}


def check_onnxruntime_cuda(results: Path) -> dict[str, Any]:
    cuda_or_skip()
    import onnxruntime as ort

    code = ("import json, sys, numpy as np, onnxruntime as ort; p = sys.argv[1]; x = np.random.default_rng(0)"
            ".standard_normal((4, 3, 32, 32)).astype(np.float32); run = lambda prov: ort.InferenceSession(p, "
            "providers=prov).run(['logits'], {'pixel_values': x})[0]; s = ort.InferenceSession(p, providers="
            "['CUDAExecutionProvider']); print(json.dumps({'version': ort.__version__, 'providers': "
            "s.get_providers(), 'max_abs_error': float(np.abs(run(['CUDAExecutionProvider']) - "
            "run(['CPUExecutionProvider'])).max())}))")
    env = dict(os.environ)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        target = Path(os.environ.get("GPU_CHECK_WORKDIR", "/tmp/paca-gpu-check")) / "ort-gpu"
        wheels = REPO / ".whl"
        source = ["--no-index", "--find-links", str(wheels)] if wheels.is_dir() else ["--retries", "0", "--timeout",
                                                                                      "15"]
        install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                                  *source, "onnxruntime-gpu==1.31.1"], capture_output=True, text=True, timeout=240)
        if install.returncode != 0:
            last = (install.stderr.strip().splitlines() or ["pip failed"])[-1][:300]
            raise Skip(f"onnxruntime-gpu is not installed and does not install here: {last}")
        env["PYTHONPATH"] = os.pathsep.join([str(target), str(REPO), env.get("PYTHONPATH", "")])
    from export import export_onnx

    onnx_path = Path(os.environ.get("GPU_CHECK_WORKDIR", "/tmp/paca-gpu-check")) / "demo_digits_cls.onnx"
    if not onnx_path.is_file():
        export_onnx("demo_digits_cls", onnx_path)
    run = subprocess.run([sys.executable, "-c", code, str(onnx_path)], capture_output=True, text=True, timeout=240,
                         env=env)
    if run.returncode != 0:
        raise RuntimeError(run.stderr.strip()[-1500:])
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    figures["passed"] = figures["providers"][0] == "CUDAExecutionProvider" and figures["max_abs_error"] <= 1e-4
    return figures


def check_tensorrt_engine(results: Path) -> dict[str, Any]:
    cuda_or_skip()
    try:
        import tensorrt
    except ImportError as exc:
        raise Skip(f"tensorrt is not importable here ({exc})") from exc
    junit = results / "tensorrt-tests.xml"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                          f"--junitxml={junit}", "tests/export/test_tensorrt_gpu.py"], cwd=REPO, capture_output=True,
                         text=True, timeout=420)
    (results / "tensorrt-tests.txt").write_text(run.stdout + run.stderr)
    return {"passed": run.returncode == 0, "tensorrt": tensorrt.__version__, "pytest_tail": run.stdout[-1500:]}


def check_kernel_benchmark(results: Path) -> dict[str, Any]:
    cuda_or_skip()
    out = results / "kernel_benchmark.json"
    run = subprocess.run([sys.executable, "benchmarks/kernel_attention.py", "--variants", "pacavit_tiny_p2cconv_100_0",
                          "--images", "224", "--batch", "8", "--json", str(out)], cwd=REPO, capture_output=True,
                         text=True, timeout=240)
    (results / "kernel_benchmark.txt").write_text(run.stdout + run.stderr)
    if run.returncode != 0:
        raise RuntimeError(run.stderr.strip()[-1500:])
    return {"rows": json.loads(out.read_text())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="folder for summary.json and logs")
    parser.add_argument("--cpu", action="store_true", help="dry run without a GPU (CUDA checks skipped)")
    parser.add_argument("--budget-s", type=float, default=420, help="stop starting checks after this")
    parser.add_argument("--kernel-cases-interpreted", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.kernel_cases_interpreted:  # the --cpu kernel check, in a child with TRITON_INTERPRET=1
        print(json.dumps(check_triton_kernel("cpu", KERNEL_CASES[:2])))
        return 0
    global FORCE_CPU
    FORCE_CPU = args.cpu
    summary = Summary(args.results / "summary.json", "cpu-dry-run" if args.cpu else "gpu", args.budget_s)
    summary.run("environment", check_environment)
    import torch

    on_gpu = torch.cuda.is_available() and not args.cpu
    if on_gpu:
        summary.run("triton_kernel", lambda: check_triton_kernel("cuda", KERNEL_CASES), needs_s=30)
    elif args.cpu:
        summary.run("triton_kernel", lambda: check_triton_kernel_interpreted(args.results), needs_s=60)
    else:
        summary.run("triton_kernel", lambda: (_ for _ in ()).throw(Skip("no CUDA device")))
    summary.run("aot_kernel", lambda: check_aot_kernel(on_gpu), needs_s=60)
    summary.run("torch_backend", check_torch_backend, needs_s=60)
    summary.run("onnxruntime_cuda", lambda: check_onnxruntime_cuda(args.results), needs_s=90)
    summary.run("tensorrt_engine", lambda: check_tensorrt_engine(args.results), needs_s=120)
    summary.run("kernel_benchmark", lambda: check_kernel_benchmark(args.results), needs_s=60)
    print(f"summary: {summary.path} — {summary.data['overall']} {summary.data['counts']}")
    return 0 if summary.data["overall"] == "passed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
