"""STAND-IN for TensorRT's C extension module (`tensorrt.so`), so TensorRT's real pure-Python plugin layer
(`tensorrt.plugin`, from the bindings wheel) can run on a machine without TensorRT's libraries.

This is a test double, not TensorRT. It holds only what the real `tensorrt/plugin/*.py` files touch (enums,
descriptor structs, the symbolic dimension expressions, the plugin registry, the interface base classes),
with the names and call shapes of TensorRT's Python bindings. `TensorRTBuilderDouble` then calls a QDP
plugin the way TensorRT's builder does for an AOT plugin layer and records what TensorRT would receive.
Nothing here compiles, times or launches a kernel; passing through it never counts as TensorRT verified.
"""

from __future__ import annotations

import enum
import operator
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------- enums


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9
    FP4 = 10


class PluginFieldType(enum.Enum):
    FLOAT16 = 0
    FLOAT32 = 1
    FLOAT64 = 2
    INT8 = 3
    INT16 = 4
    INT32 = 5
    CHAR = 6
    DIMS = 7
    UNKNOWN = 8
    BF16 = 9
    INT64 = 10
    FP8 = 11
    INT4 = 12
    FP4 = 13


class TensorFormat(enum.Enum):
    LINEAR = 0
    CHW2 = 1
    HWC8 = 2
    CHW4 = 3
    CHW16 = 4
    CHW32 = 5
    DHWC8 = 6
    CDHW32 = 7
    HWC = 8
    DLA_LINEAR = 9
    DLA_HWC4 = 10
    HWC16 = 11
    DHWC = 12


class DimensionOperation(enum.Enum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    SUB = 4
    EQUAL = 5
    LESS = 6
    FLOOR_DIV = 7
    CEIL_DIV = 8


class PluginArgType(enum.Enum):
    INT = 0


class PluginArgDataType(enum.Enum):
    INT8 = 0
    INT16 = 1
    INT32 = 2


class QuickPluginCreationRequest(enum.Enum):
    UNKNOWN = 0
    PREFER_JIT = 1
    PREFER_AOT = 2
    STRICT_JIT = 3
    STRICT_AOT = 4


class TensorRTPhase(enum.Enum):
    BUILD = 0
    RUNTIME = 1


float32, float16, bfloat16 = DataType.FLOAT, DataType.HALF, DataType.BF16
int8, int32, int64, uint8 = DataType.INT8, DataType.INT32, DataType.INT64, DataType.UINT8
fp8, int4, fp4 = DataType.FP8, DataType.INT4, DataType.FP4

_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
          DataType.INT64: np.int64, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8}


def nptype(trt_type: DataType) -> type:
    if trt_type in _NUMPY:
        return _NUMPY[trt_type]
    raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")


class Logger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self, min_severity: int = WARNING) -> None:
        self.min_severity = min_severity
        self.messages: list[tuple[int, str]] = []

    def log(self, severity: int, msg: str) -> None:
        self.messages.append((severity, msg))


# --------------------------------------------------------------------------------- shapes and exprs


class Dims:
    MAX_DIMS = 8

    def __init__(self, shape: Iterable[int] | int = ()) -> None:
        self._dims = [0] * shape if isinstance(shape, int) else [int(d) for d in shape]

    def __len__(self) -> int:
        return len(self._dims)

    def __getitem__(self, index: int) -> int:
        return self._dims[index]

    def __setitem__(self, index: int, value: int) -> None:
        self._dims[index] = int(value)

    def __iter__(self):
        return iter(self._dims)

    def __repr__(self) -> str:
        return f"Dims({tuple(self._dims)})"


_EVAL = {
    DimensionOperation.SUM: operator.add, DimensionOperation.PROD: operator.mul,
    DimensionOperation.MAX: max, DimensionOperation.MIN: min, DimensionOperation.SUB: operator.sub,
    DimensionOperation.EQUAL: lambda a, b: int(a == b), DimensionOperation.LESS: lambda a, b: int(a < b),
    DimensionOperation.FLOOR_DIV: operator.floordiv, DimensionOperation.CEIL_DIV: lambda a, b: -(-a // b),
}


class IDimensionExpr:
    """A build-time dimension: a constant, a named runtime dimension, or an operation on two of them.
    `evaluate(bindings)` (not TensorRT API) resolves it for one concrete set of runtime dimensions."""

    def __init__(self, *, value: int | None = None, symbol: str | None = None,
                 op: DimensionOperation | None = None, args: tuple[IDimensionExpr, ...] = ()) -> None:
        self._value, self._symbol, self._op, self._args = value, symbol, op, args

    def is_constant(self) -> bool:
        return self._value is not None

    def get_constant_value(self) -> int:
        if self._value is None:
            raise ValueError("not a constant expression")
        return self._value

    def is_size_tensor(self) -> bool:
        return False

    def evaluate(self, bindings: dict[str, int]) -> int:
        if self._value is not None:
            return self._value
        if self._symbol is not None:
            return bindings[self._symbol]
        return int(_EVAL[self._op](*(a.evaluate(bindings) for a in self._args)))

    def __repr__(self) -> str:
        if self._value is not None:
            return str(self._value)
        if self._symbol is not None:
            return self._symbol
        return f"{self._op.name}({', '.join(map(repr, self._args))})"


class IExprBuilder:
    def constant(self, value: int) -> IDimensionExpr:
        return IDimensionExpr(value=int(value))

    def operation(self, op: DimensionOperation, first: IDimensionExpr, second: IDimensionExpr) -> IDimensionExpr:
        if first.is_constant() and second.is_constant():
            return IDimensionExpr(value=int(_EVAL[op](first.get_constant_value(), second.get_constant_value())))
        neutral = {DimensionOperation.SUM: 0, DimensionOperation.SUB: 0, DimensionOperation.PROD: 1,
                   DimensionOperation.FLOOR_DIV: 1, DimensionOperation.CEIL_DIV: 1}
        if op in neutral and second.is_constant() and second.get_constant_value() == neutral[op]:
            return first
        return IDimensionExpr(op=op, args=(first, second))

    def declare_size_tensor(self, output_index: int, opt: IDimensionExpr, upper: IDimensionExpr) -> IDimensionExpr:
        return IDimensionExpr(symbol=f"size_tensor_{output_index}")

    @staticmethod
    def symbol(name: str) -> IDimensionExpr:
        """A runtime dimension (not TensorRT API: TensorRT makes these from the network's inputs)."""
        return IDimensionExpr(symbol=name)


class DimsExprs:
    def __init__(self, length: int) -> None:
        self._exprs: list[IDimensionExpr | None] = [None] * length

    def __len__(self) -> int:
        return len(self._exprs)

    def __getitem__(self, index: int) -> IDimensionExpr:
        return self._exprs[index]

    def __setitem__(self, index: int, expr: IDimensionExpr) -> None:
        self._exprs[index] = expr


class PluginTensorDesc:
    def __init__(self) -> None:
        self.dims = Dims()
        self.type = DataType.FLOAT
        self.format = TensorFormat.LINEAR
        self.scale = 1.0


class DynamicPluginTensorDesc:
    def __init__(self) -> None:
        self.desc = PluginTensorDesc()
        self.min = Dims()
        self.opt = Dims()
        self.max = Dims()


# ----------------------------------------------------------------------- fields, interfaces, registry


class PluginField:
    def __init__(self, name: str = "", data: Any = None, type: PluginFieldType = PluginFieldType.UNKNOWN) -> None:
        self.name = name
        self.data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
        self.type = type
        self.size = 0 if data is None else len(data)


class PluginFieldCollection(list):
    pass


class ITensor:
    pass


class ISymExpr:
    def __init__(self) -> None:
        pass


class IPluginV3:
    def __init__(self) -> None:
        pass


class IPluginV3QuickCore:
    def __init__(self) -> None:
        pass


class IPluginV3QuickBuild:
    def __init__(self) -> None:
        pass


class IPluginV3QuickRuntime:
    def __init__(self) -> None:
        pass


class IPluginV3QuickAOTBuild:
    def __init__(self) -> None:
        pass


class IPluginCreatorV3Quick:
    def __init__(self) -> None:
        pass


class _PluginRegistry:
    def __init__(self) -> None:
        self.creators: dict[tuple[str, str, str], Any] = {}

    def register_creator(self, creator: Any, namespace: str) -> bool:
        self.creators[(creator.name, creator.plugin_version, namespace)] = creator
        return True

    def get_creator(self, name: str, version: str, namespace: str = "") -> Any:
        return self.creators.get((name, version, namespace))


API = (
    "DataType", "PluginFieldType", "TensorFormat", "DimensionOperation", "PluginArgType", "PluginArgDataType",
    "QuickPluginCreationRequest", "TensorRTPhase", "float32", "float16", "bfloat16", "int8", "int32", "int64",
    "uint8", "fp8", "int4", "fp4", "nptype", "Logger", "Dims", "IDimensionExpr", "IExprBuilder",
    "DimsExprs", "PluginTensorDesc", "DynamicPluginTensorDesc", "PluginField", "PluginFieldCollection",
    "ITensor", "ISymExpr", "IPluginV3", "IPluginV3QuickCore", "IPluginV3QuickBuild", "IPluginV3QuickRuntime",
    "IPluginV3QuickAOTBuild", "IPluginCreatorV3Quick",
)


def build_module(version: str) -> types.ModuleType:
    """A fresh `tensorrt` stand-in module reporting `version`, with its own plugin registry."""
    module = types.ModuleType("tensorrt", __doc__)
    for name in API:
        setattr(module, name, globals()[name])
    module.bool = DataType.BOOL  # trt.bool, kept off this module's namespace
    registry = _PluginRegistry()
    module.get_plugin_registry = lambda: registry
    module.__version__ = version
    module.__standin__ = True
    return module


# ------------------------------------------------------------- TensorRT's builder, for one AOT layer


class LaunchParamsSink:
    """Where `get_launch_params` writes the kernel's launch parameters (TensorRT's IKernelLaunchParams)."""

    grid_x = grid_y = grid_z = block_x = block_y = block_z = shared_mem = None


class SymExprSink:
    """TensorRT's ISymExprs: the extra scalar kernel arguments."""

    def __init__(self) -> None:
        self.nbSymExprs = 0
        self.exprs: dict[int, Any] = {}

    def __setitem__(self, index: int, value: Any) -> None:
        if not 0 <= index < self.nbSymExprs:
            raise IndexError(index)
        self.exprs[index] = value


@dataclass
class AotLayerBuild:
    """What TensorRT received from the plugin for one (type combination, tactic)."""

    io_types: tuple[DataType, ...]
    tactic: int
    kernel_name: bytes | str
    ptx: bytes
    launch: dict[str, IDimensionExpr] = field(default_factory=dict)
    extra_args: list[tuple[PluginArgDataType, IDimensionExpr]] = field(default_factory=list)

    def grid(self, bindings: dict[str, int]) -> tuple[int, int, int]:
        return tuple(self.launch[f"grid_{a}"].evaluate(bindings) for a in "xyz")

    def block(self, bindings: dict[str, int]) -> tuple[int, int, int]:
        return tuple(self.launch[f"block_{a}"].evaluate(bindings) for a in "xyz")

    def scalars(self, bindings: dict[str, int]) -> list[int]:
        return [expr.evaluate(bindings) for _, expr in self.extra_args]


class TensorRTBuilderDouble:
    """Drives a QDP plugin through the calls TensorRT's builder makes for an AOT plugin layer:
    create (fields as the ONNX parser passes them) → output types → output shapes → format combinations
    (autotune) → configure → valid tactics → per tactic: set_tactic, get_launch_params, get_kernel."""

    def __init__(self, trt: types.ModuleType) -> None:
        self.trt = trt
        self.exprs = IExprBuilder()

    @staticmethod
    def onnx_fields(creator: Any, attributes: dict[str, int | float | str]) -> PluginFieldCollection:
        """What the ONNX parser passes: each creator field from the node's attribute, INT as int32 and FLOAT
        as float32 arrays (onnx-tensorrt's loadFields)."""
        fields = PluginFieldCollection()
        for wanted in creator.field_names:
            value = attributes[wanted.name]
            if isinstance(value, int):
                fields.append(PluginField(wanted.name, np.array([value], np.int32), PluginFieldType.INT32))
            elif isinstance(value, float):
                fields.append(PluginField(wanted.name, np.array([value], np.float32), PluginFieldType.FLOAT32))
            else:
                fields.append(PluginField(wanted.name, np.frombuffer(str(value).encode(), np.int8),
                                          PluginFieldType.CHAR))
        return fields

    def create(self, name: str, namespace: str, attributes: dict[str, Any],
               request: QuickPluginCreationRequest = QuickPluginCreationRequest.PREFER_AOT) -> Any:
        creator = self.trt.get_plugin_registry().get_creator(name, "1", namespace)
        if creator is None:
            raise LookupError(f"no plugin creator {namespace}::{name} v1 registered")
        return creator.create_plugin(name, namespace, self.onnx_fields(creator, attributes), TensorRTPhase.BUILD,
                                     request)

    def build(self, plugin: Any, input_shapes: Sequence[Sequence[int | str]], io_type: DataType,
              ranges: dict[str, tuple[int, int, int]]) -> list[AotLayerBuild]:
        """`input_shapes`: per input, ints (static) or names of runtime dims; `ranges`: name → (min, opt, max)."""
        num_inputs = len(input_shapes)
        outputs = plugin.get_output_data_types([io_type] * num_inputs, [len(s) for s in input_shapes])
        dims_exprs = []
        for shape in input_shapes:
            exprs = DimsExprs(len(shape))
            for i, d in enumerate(shape):
                exprs[i] = self.exprs.symbol(d) if isinstance(d, str) else self.exprs.constant(d)
            dims_exprs.append(exprs)
        output_exprs = plugin.get_output_shapes(dims_exprs, [], self.exprs)

        def dynamic_desc(exprs: DimsExprs, dtype: DataType) -> DynamicPluginTensorDesc:
            desc = DynamicPluginTensorDesc()
            desc.desc.type, desc.desc.format = dtype, TensorFormat.LINEAR
            items = [exprs[i] for i in range(len(exprs))]
            desc.desc.dims = Dims(e.get_constant_value() if e.is_constant() else -1 for e in items)
            for attr, k in (("min", 0), ("opt", 1), ("max", 2)):
                bindings = {name: bounds[k] for name, bounds in ranges.items()}
                setattr(desc, attr, Dims(e.evaluate(bindings) for e in items))
            return desc

        in_out = [dynamic_desc(e, io_type) for e in dims_exprs] + \
                 [dynamic_desc(e, t) for e, t in zip(output_exprs, outputs, strict=True)]
        self.output_shapes = [tuple(o[i] for i in range(len(o))) for o in output_exprs]
        combos = plugin.get_supported_format_combinations(in_out, num_inputs)
        width = len(in_out)
        builds = []
        for start in range(0, len(combos), width):
            chosen = combos[start:start + width]
            if any(c.type != io_type for c in chosen):
                continue  # a strongly typed network only offers its own types
            for desc, pick in zip(in_out, chosen, strict=True):
                desc.desc.type, desc.desc.format = pick.type, pick.format
            plugin.configure_plugin(in_out[:num_inputs], in_out[num_inputs:])
            for tactic in plugin.get_valid_tactics() or [0]:  # no custom tactic: TensorRT's default, 0
                plugin.set_tactic(tactic)
                launch, sym = LaunchParamsSink(), SymExprSink()
                plugin.get_launch_params(dims_exprs, in_out, num_inputs, launch, sym, self.exprs)
                name, ptx = plugin.get_kernel([d.desc for d in in_out[:num_inputs]],
                                              [d.desc for d in in_out[num_inputs:]])
                builds.append(AotLayerBuild(
                    io_types=tuple(c.type for c in chosen), tactic=tactic, kernel_name=name, ptx=ptx,
                    launch={k: getattr(launch, k).expr for k in ("grid_x", "grid_y", "grid_z", "block_x",
                                                                  "block_y", "block_z", "shared_mem")},
                    extra_args=[(sym.exprs[i].dtype, sym.exprs[i].expr) for i in range(sym.nbSymExprs)]))
        return builds
