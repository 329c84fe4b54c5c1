"""A finished model as an ONNX file (``model.onnx``): runs in onnxruntime, without JAX.

Why our own exporter: jax2onnx, the converter library for JAX, does not install beside this
package (its releases 0.13.1-0.17.1 require ``orbax-checkpoint<0.11.37``; we need 0.12.8 or
later), and the release the resolver falls back to (0.13.0) fails on ResNet-20, Conv-4 and
VGG-16 (issue 33). So the eval-mode forward pass is traced to a jaxpr (:func:`jax.make_jaxpr`,
the weights and BatchNorm statistics closed over as constants, the batch axis symbolic), and
each of its equations is written as ONNX nodes with the ``onnx`` package's helpers:

- equations whose inputs are all constants are computed here, once (BatchNorm's
  ``scale * rsqrt(var + eps)``, reshaped biases): the file holds their results;
- a convolution followed by per-channel ``add``/``sub``/``mul`` by constants (its bias, then
  BatchNorm in eval mode) is one ``Conv`` with the affine map folded into its kernel and bias,
  so a pruned (zero) kernel entry stays exactly 0.0 in the file;
- our networks are NHWC, ONNX's ``Conv`` and pooling are NCHW: each is wrapped in the
  ``Transpose`` nodes its dimension numbers need, and a transpose back to NHWC that is
  followed at once by another to NCHW (conv after conv) is never written;
- ``jit`` and ``custom_jvp_call`` (``nn.relu``) are inlined.

With ``quantized`` (Qwix's int8 weights and scales, :mod:`.quantize`) the kernels are
int8 initializers dequantized by ``DequantizeLinear`` (QDQ, weight-only; BatchNorm folds
into the scales), 0 wherever a weight was pruned. :func:`onnx_latency` times a file in
onnxruntime, single-threaded or on every core.

Weights are initializers named by their parameter path (``conv1/kernel``, OIHW for a
convolution), so they can be read back. A primitive without a translation (a layer of a
model of one's own) is one line (:class:`~lottery.config.ConfigError`) naming it and the
layer. Run the file with ``onnxruntime.InferenceSession(path).run(None, {"input": x})``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime
from jax.extend import core
from onnx import helper

from lottery.atomic import atomic_write_bytes
from lottery.config import ConfigError
from lottery.deploy.latency import timed_median
from lottery.deploy.quantize import Quantized
from lottery.models.network import BatchStats, Network, Params
from lottery.pruning.mask import flatten, unflatten

# ONNX operator set written (onnxruntime 1.19, the oldest set's, and later run it).
OPSET = 17
INPUT, OUTPUT, BATCH = "input", "logits", "batch"
# A constant result larger than its inputs (a broadcast) is computed here only up to this
# many elements; beyond, it stays a node.
FOLD_LIMIT = 1 << 16
# Call primitives whose inner jaxpr is inlined, and the parameter that holds it.
CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr",
         "core_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr",
         "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
         "remat": "jaxpr", "checkpoint": "jaxpr"}


class UnsupportedLayer(ConfigError):
    """A layer (a JAX primitive) the exporter has no ONNX translation for; its line names
    the primitive and the layer."""


@dataclass(eq=False)
class Tensor:
    """A value computed in the ONNX graph (not a constant).

    ``perm``: the graph holds the value transposed by it (axis ``k`` of the ONNX tensor is
    the jaxpr's axis ``perm[k]``: NCHW for an NHWC value after a Conv), None for as is.
    Elementwise operations and pooling keep that layout, so a run of convolutions, ReLUs,
    residual sums and pools has no Transpose between them.
    """

    name: str
    perm: tuple[int, ...] | None = None
    plain: str | None = None  # the value as is (transposed back), once asked for


@dataclass
class PendingConv:
    """A convolution not written yet: per-channel affine maps that follow it (its bias,
    BatchNorm) are folded into ``kernel`` (OIHW) and ``bias`` until something else uses it."""

    x: str  # the NCHW input
    kernel: np.ndarray
    bias: np.ndarray
    attrs: dict[str, Any]
    out_spec: tuple[int, ...]  # the jaxpr's axes of the NC... output (a Tensor's perm)
    channel_axis: int  # the output's feature axis in the jaxpr's layout
    rank: int
    name: str  # the kernel's initializer name
    tensor: Tensor | None = None  # the written output, once materialized
    # int8 (QDQ): the kernel's int8 values (OIHW) and float scale per output channel,
    # dequantized in the graph; ``kernel`` is then their product, for reference.
    qkernel: np.ndarray | None = None
    qscale: np.ndarray | None = None


Value = np.ndarray | Tensor | PendingConv


class _Graph:
    """The nodes and initializers of the ONNX graph being built."""

    def __init__(self, names: dict[int, str], int8: dict[int, Any] | None = None) -> None:
        self.int8 = int8 or {}  # id(dequantized kernel) -> (int8 values, scale per output)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names = names  # id(constant array) -> parameter path
        self.cache: dict[tuple[int, str], str] = {}
        self.kept: list[Any] = []  # keeps cached constants alive (their ids stay unique)
        self.taken: set[str] = set()
        self.count = 0
        self.batch: str | None = None

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def constant(self, value: Any, name: str | None = None, key: Any = None) -> str:
        """An initializer holding ``value``; the same one for the same ``key`` object."""
        cache_key = (id(key if key is not None else value), name or "")
        if cache_key in self.cache:
            return self.cache[cache_key]
        array = np.asarray(value)
        base = name or self.names.get(id(key if key is not None else value)) or "const"
        unique = base if base not in self.taken else self.fresh(base)
        self.taken.add(unique)
        self.initializers.append(onnx.numpy_helper.from_array(array, unique))
        self.cache[cache_key] = unique
        self.kept.append(key if key is not None else value)
        return unique

    def node(self, op: str, inputs: Sequence[str], outputs: int = 1, **attrs: Any) -> list[str]:
        names = [self.fresh(op) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, **attrs))
        return names

    def one(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        return self.node(op, inputs, **attrs)[0]

    def dequantized(self, name: str, values: np.ndarray, scale: np.ndarray, axis: int) -> str:
        """``values`` (int8) times ``scale`` along ``axis``, as a DequantizeLinear node whose
        int8 initializer is named ``name`` (QDQ)."""
        q = self.constant(values, name, key=values)
        s = self.constant(scale.astype(np.float32), f"{name}_scale", key=scale)
        zero = self.constant(np.zeros(scale.shape, np.int8), f"{name}_zero_point")
        return self.one("DequantizeLinear", [q, s, zero], axis=axis)

    def batch_size(self) -> str:
        """The input's batch size, an int64 tensor of one element (computed once)."""
        if self.batch is None:
            shape = self.one("Shape", [INPUT])
            self.batch = self.one("Slice", [shape, self.constant(np.array([0])),
                                            self.constant(np.array([1]))])
        return self.batch


class _Translator:
    """Writes the equations of a jaxpr into a :class:`_Graph`."""

    def __init__(self, graph: _Graph, batch: Any) -> None:
        self.graph = graph
        self.batch_dim = batch  # the symbolic batch dimension of the traced input

    # -- values ---------------------------------------------------------------------------

    def name(self, value: Value) -> str:
        """The ONNX name holding ``value`` (an initializer for a constant)."""
        return self.plain(value)

    def plain(self, value: Value) -> str:
        """The ONNX name holding ``value`` in the jaxpr's layout."""
        if isinstance(value, PendingConv):
            value = self.materialize(value)
        if not isinstance(value, Tensor):
            return self.graph.constant(value)
        if value.perm is None:
            return value.name
        if value.plain is None:
            back = [int(i) for i in np.argsort(value.perm)]
            value.plain = self.graph.one("Transpose", [value.name], perm=back)
        return value.plain

    def stored(self, value: Value, perm: Sequence[int]) -> str:
        """The ONNX name holding ``value`` transposed by ``perm``."""
        perm = tuple(int(i) for i in perm)
        if isinstance(value, PendingConv):
            value = self.materialize(value)
        if isinstance(value, Tensor) and value.perm == perm:
            return value.name
        if perm == tuple(range(len(perm))):
            return self.plain(value)
        return self.graph.one("Transpose", [self.plain(value)], perm=list(perm))

    def layout(self, inputs: Sequence[Value], rank: int) -> tuple[list[str], tuple | None]:
        """The inputs of an elementwise operation of ``rank``-d values, in the layout of the
        computed ones when they share one (constants transposed to match), and that layout."""
        values = [self.materialize(v) if isinstance(v, PendingConv) else v for v in inputs]
        perms = {v.perm for v in values if isinstance(v, Tensor)}
        if len(perms) != 1 or None in perms:
            return [self.plain(v) for v in values], None
        (perm,) = perms
        names = []
        for v in values:
            if isinstance(v, Tensor):
                names.append(v.name)
            elif v.ndim == 0:
                names.append(self.graph.constant(v))
            else:
                full = v.reshape((1,) * (rank - v.ndim) + v.shape)
                names.append(self.graph.constant(np.ascontiguousarray(full.transpose(perm))))
        return names, perm

    def materialize(self, pending: PendingConv) -> Tensor:
        g = self.graph
        if pending.tensor is None:
            if pending.qkernel is not None:
                kernel = g.dequantized(pending.name, pending.qkernel, pending.qscale, 0)
            else:
                kernel = g.constant(pending.kernel, pending.name, key=pending.kernel)
            inputs = [pending.x, kernel]
            if np.any(pending.bias):
                bias_name = pending.name.rsplit("/", 1)[0] + "/bias"
                inputs.append(g.constant(pending.bias, bias_name, key=pending.bias))
            pending.tensor = Tensor(g.one("Conv", inputs, **pending.attrs), pending.out_spec)
        return pending.tensor

    def shape_tensor(self, shape: Sequence[Any], reshape: bool = False) -> str:
        """An int64 tensor of ``shape``; a symbolic dimension is the batch size (or -1 in a
        reshape's shape, where one dimension may be left to be inferred)."""
        symbolic = [i for i, d in enumerate(shape) if not _known(d)]
        if not symbolic:
            return self.graph.constant(np.array([int(d) for d in shape], np.int64))
        if reshape and len(symbolic) == 1:
            dims = [-1 if i in symbolic else int(d) for i, d in enumerate(shape)]
            return self.graph.constant(np.array(dims, np.int64))
        pieces = []
        for d in shape:
            if _known(d):
                pieces.append(self.graph.constant(np.array([int(d)], np.int64)))
            elif d == self.batch_dim:
                pieces.append(self.graph.batch_size())
            else:
                raise _Unsupported(f"the shape dimension {d}")
        return self.graph.one("Concat", pieces, axis=0)

    # -- the jaxpr --------------------------------------------------------------------------

    def run(self, jaxpr: core.Jaxpr, consts: Sequence[Any], args: Sequence[Value]) -> list[Value]:
        env: dict[Any, Value] = {}

        def read(atom: Any) -> Value:
            if isinstance(atom, core.Literal):
                return np.asarray(atom.val, atom.aval.dtype)
            return env[atom]

        for var, value in zip(jaxpr.constvars, consts, strict=True):
            env[var] = value
        for var, value in zip(jaxpr.invars, args, strict=True):
            env[var] = value
        for eqn in jaxpr.eqns:
            inputs = [read(v) for v in eqn.invars]
            try:
                outputs = self.equation(eqn, inputs)
            except _Unsupported as unsupported:
                unsupported.equations.append(eqn)  # innermost first
                raise
            for var, value in zip(eqn.outvars, outputs, strict=True):
                env[var] = value
        return [read(v) for v in jaxpr.outvars]

    def equation(self, eqn: Any, inputs: list[Value]) -> list[Value]:
        name = eqn.primitive.name
        if name in CALLS and CALLS[name] in eqn.params:
            inner = eqn.params[CALLS[name]]
            if isinstance(inner, core.ClosedJaxpr):
                args = inputs[len(inputs) - len(inner.jaxpr.invars) :]
                return self.run(inner.jaxpr, inner.consts, args)
            return self.run(inner, [], inputs)
        if _foldable(eqn, inputs):
            out = eqn.primitive.bind(*inputs, **eqn.params)
            outs = out if eqn.primitive.multiple_results else [out]
            return [np.asarray(o) for o in outs]
        rule = RULES.get(name)
        if rule is None:
            raise _Unsupported(f"the JAX primitive {name!r}")
        out = rule(self, eqn, inputs)
        return out if isinstance(out, list) else [out]


def _known(dim: Any) -> bool:
    """Whether a shape dimension is a number (not the symbolic batch size)."""
    return isinstance(dim, int | np.integer)


class _Unsupported(Exception):
    """What the exporter cannot write; becomes the one line of a ConfigError."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.equations: list[Any] = []  # the equation, then the calls it is inlined from


def _unsupported_line(unsupported: _Unsupported) -> str:
    """``unsupported`` in one line, naming the layer (its Flax module path, from the
    outermost call that has one) and the line of the model's code."""
    outermost_first = unsupported.equations[::-1]
    stacks = [str(e.source_info.name_stack) for e in outermost_first]
    layer = next((s for s in stacks if s), "the model")
    where = ""
    try:
        from jax._src import source_info_util

        places = [source_info_util.summarize(e.source_info) for e in outermost_first]
        where = next((f" ({p})" for p in places if p and "unknown" not in p), "")
    except Exception:  # a private helper: only a nicer message
        pass
    what = str(unsupported)
    return (
        f"cannot export to ONNX: layer {layer!r}{where} uses {what}, which "
        "lottery.deploy.onnx_export does not translate; write the layer with supported "
        "operations, or export with jax.export (lottery.deploy.export)"
    )


def _foldable(eqn: Any, inputs: list[Value]) -> bool:
    """Whether ``eqn`` has only constant inputs and a result small enough to store."""
    if not all(isinstance(v, np.ndarray) for v in inputs):
        return False
    avals = [v.aval for v in eqn.outvars]
    if not all(all(_known(d) for d in a.shape) for a in avals):
        return False
    size_in = sum(v.size for v in inputs)
    size_out = sum(int(np.prod(a.shape)) for a in avals)
    return size_out <= max(size_in, FOLD_LIMIT)


# -- rules: one per primitive --------------------------------------------------------------

def _elementwise(op: str) -> Callable[..., Value]:
    def rule(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
        names, perm = t.layout(inputs, eqn.outvars[0].aval.ndim)
        return Tensor(t.graph.one(op, names), perm)

    return rule


def _unary(*ops: str) -> Callable[..., Value]:
    def rule(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
        (name,), perm = t.layout(inputs, eqn.outvars[0].aval.ndim)
        for op in ops:
            name = t.graph.one(op, [name])
        return Tensor(name, perm)

    return rule


def _channel_vector(pending: PendingConv, value: np.ndarray) -> np.ndarray | None:
    """``value`` as one number per output channel of ``pending``, if it broadcasts over
    nothing else (a bias, a BatchNorm shift or scale), else None."""
    if value.ndim > pending.rank:
        return None
    shape = (1,) * (pending.rank - value.ndim) + value.shape
    if any(s != 1 for i, s in enumerate(shape) if i != pending.channel_axis):
        return None
    channels = pending.kernel.shape[0]
    flat = value.reshape(-1)
    if flat.size not in (1, channels):
        return None
    return np.broadcast_to(flat, (channels,)).astype(pending.kernel.dtype)


def _affine(op: str) -> Callable[..., Value]:
    """``add``/``sub``/``mul``: folded into a pending convolution where the other operand is
    a per-channel constant (``x + c``, ``x - c``, ``x * c``, ``c * x``, ``c + x``)."""
    onnx_op = {"add": "Add", "sub": "Sub", "mul": "Mul"}[op]

    def rule(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
        a, b = inputs
        if isinstance(b, PendingConv) and isinstance(a, np.ndarray) and op != "sub":
            a, b = b, a
        if isinstance(a, PendingConv) and a.tensor is None and isinstance(b, np.ndarray):
            vector = _channel_vector(a, b)
            if vector is not None:
                kernel, bias, qscale = a.kernel, a.bias, a.qscale
                if op == "add":
                    bias = bias + vector
                elif op == "sub":
                    bias = bias - vector
                else:
                    kernel = kernel * vector.reshape((-1,) + (1,) * (kernel.ndim - 1))
                    bias = bias * vector
                    qscale = None if qscale is None else qscale * vector
                return dataclasses.replace(a, kernel=kernel, bias=bias, qscale=qscale)
        names, perm = t.layout(inputs, eqn.outvars[0].aval.ndim)
        return Tensor(t.graph.one(onnx_op, names), perm)

    return rule


def _conv(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    x, w = inputs
    p = eqn.params
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
        raise _Unsupported("a transposed or batch-grouped convolution (conv_general_dilated)")
    lhs, rhs, out = p["dimension_numbers"]
    if not isinstance(w, np.ndarray):
        raise _Unsupported("a convolution with a computed (non-constant) kernel")
    if any(not isinstance(lo, int) or lo < 0 or hi < 0 for lo, hi in p["padding"]):
        raise _Unsupported("a convolution with negative padding")
    g = t.graph
    kernel = np.ascontiguousarray(np.transpose(w, rhs))  # OI + spatial
    name = g.names.get(id(w)) or g.fresh("conv/kernel")
    x_nc = t.stored(x, lhs)
    attrs = {
        "strides": list(p["window_strides"]),
        "pads": [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]],
        "dilations": list(p["rhs_dilation"]),
        "group": int(p["feature_group_count"]),
        "kernel_shape": list(kernel.shape[2:]),
    }
    bias = np.zeros(kernel.shape[0], kernel.dtype)
    out_spec = tuple(int(i) for i in out)
    pending = PendingConv(x_nc, kernel, bias, attrs, out_spec, out_spec[1], len(out), name)
    if id(w) in g.int8:
        values, scale = g.int8[id(w)]
        pending.qkernel = np.ascontiguousarray(np.transpose(values, rhs))
        pending.qscale = scale
    return pending


def _transpose(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    return Tensor(t.graph.one("Transpose", [t.name(inputs[0])],
                              perm=list(eqn.params["permutation"])))


def _dot_general(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    a, b = inputs
    lhs_rank, rhs_rank = (v.aval.ndim for v in eqn.invars)
    g = t.graph
    if not lb and not rb and rhs_rank == 2 and tuple(lc) == (lhs_rank - 1,) and len(rc) == 1:
        if rc[0] == 1:  # x @ w.T
            b = np.ascontiguousarray(b.T) if isinstance(b, np.ndarray) else Tensor(
                g.one("Transpose", [t.name(b)], perm=[1, 0]))
        if isinstance(b, np.ndarray) and id(b) in g.int8 and rc[0] == 0:
            values, scale = g.int8[id(b)]
            weight = g.dequantized(g.names.get(id(b), "dense/kernel"), values, scale, 1)
        else:
            weight = t.name(b)
        out = g.one("MatMul", [t.name(a), weight])
    else:
        letters = iter("abcdefghijklmnopqrstuvwxyz")
        lhs = [next(letters) for _ in range(lhs_rank)]
        rhs = [next(letters) for _ in range(rhs_rank)]
        for i, j in zip(list(lc) + list(lb), list(rc) + list(rb), strict=True):
            rhs[j] = lhs[i]
        batch = [lhs[i] for i in lb]
        free_l = [c for i, c in enumerate(lhs) if i not in lc and i not in lb]
        free_r = [c for j, c in enumerate(rhs) if j not in rc and j not in rb]
        equation = f"{''.join(lhs)},{''.join(rhs)}->{''.join(batch + free_l + free_r)}"
        out = g.one("Einsum", [t.name(a), t.name(b)], equation=equation)
    wanted = eqn.outvars[0].aval.dtype
    if np.dtype(wanted) != np.dtype(eqn.invars[0].aval.dtype):
        out = g.one("Cast", [out], to=helper.np_dtype_to_tensor_dtype(np.dtype(wanted)))
    return Tensor(out)


def _reshape(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    if eqn.params.get("dimensions") is not None:
        raise _Unsupported("a reshape with dimensions")
    shape = t.shape_tensor(eqn.params["new_sizes"], reshape=True)
    return Tensor(t.graph.one("Reshape", [t.name(inputs[0]), shape]))


def _broadcast_in_dim(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    shape = eqn.params["shape"]
    kept = eqn.params["broadcast_dimensions"]
    name = t.name(inputs[0])
    new_axes = [i for i in range(len(shape)) if i not in kept]
    if new_axes:
        name = t.graph.one("Unsqueeze", [name, t.graph.constant(np.array(new_axes, np.int64))])
    return Tensor(t.graph.one("Expand", [name, t.shape_tensor(shape)]))


def _squeeze(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    axes = t.graph.constant(np.array(eqn.params["dimensions"], np.int64))
    return Tensor(t.graph.one("Squeeze", [t.name(inputs[0]), axes]))


def _expand_dims(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    axes = t.graph.constant(np.array(eqn.params["dimensions"], np.int64))
    return Tensor(t.graph.one("Unsqueeze", [t.name(inputs[0]), axes]))


def _concatenate(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    return Tensor(t.graph.one("Concat", [t.name(v) for v in inputs],
                              axis=int(eqn.params["dimension"])))


def _convert(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    to = helper.np_dtype_to_tensor_dtype(np.dtype(eqn.params["new_dtype"]))
    return Tensor(t.graph.one("Cast", [t.name(inputs[0])], to=to))


def _integer_pow(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    x = t.name(inputs[0])
    y = eqn.params["y"]
    if y == 2:
        return Tensor(t.graph.one("Mul", [x, x]))
    exponent = t.graph.constant(np.asarray(y, eqn.invars[0].aval.dtype))
    return Tensor(t.graph.one("Pow", [x, exponent]))


def _square(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    x = t.name(inputs[0])
    return Tensor(t.graph.one("Mul", [x, x]))


def _select_n(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    which, *cases = inputs
    if len(cases) != 2 or np.dtype(eqn.invars[0].aval.dtype) != np.bool_:
        raise _Unsupported("select_n with other than a boolean and two cases")
    return Tensor(t.graph.one("Where", [t.name(which), t.name(cases[1]), t.name(cases[0])]))


def _clamp(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    low, x, high = (t.name(v) for v in inputs)
    return Tensor(t.graph.one("Min", [t.graph.one("Max", [x, low]), high]))


def _reduce(op: str) -> Callable[..., Value]:
    def rule(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
        axes = [int(a) for a in eqn.params["axes"]]
        (x,), perm = t.layout(inputs, eqn.invars[0].aval.ndim)
        out_perm = None
        if perm is not None:  # reduce the held axes; what is left keeps their order
            left = [a for a in perm if a not in axes]
            out_perm = tuple(int(i) for i in np.argsort(np.argsort(left)))
            axes = [perm.index(a) for a in axes]
            if out_perm == tuple(range(len(left))):
                out_perm = None
        if op == "ReduceSum":  # axes an input from opset 13
            y = t.graph.one(op, [x, t.graph.constant(np.array(axes, np.int64))], keepdims=0)
        else:
            y = t.graph.one(op, [x], axes=axes, keepdims=0)
        return Tensor(y, out_perm)

    return rule


def _argmax(op: str) -> Callable[..., Value]:
    def rule(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
        (axis,) = eqn.params["axes"]
        out = t.graph.one(op, [t.name(inputs[0])], axis=int(axis), keepdims=0)
        to = helper.np_dtype_to_tensor_dtype(np.dtype(eqn.params["index_dtype"]))
        return Tensor(t.graph.one("Cast", [out], to=to))

    return rule


def _pool(kind: str) -> Callable[..., Value]:
    """``reduce_window_max`` (MaxPool) and ``reduce_window_sum`` (AveragePool counting the
    zero padding, times the window's size), over the axes the window moves along."""

    def rule(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
        p = eqn.params
        window, strides, padding = p["window_dimensions"], p["window_strides"], p["padding"]
        if any(d != 1 for d in p["base_dilation"]):
            raise _Unsupported(f"reduce_window_{kind} with base dilation")
        moving = [i for i in range(len(window))
                  if window[i] != 1 or strides[i] != 1 or tuple(padding[i]) != (0, 0)
                  or p["window_dilation"][i] != 1]
        still = [i for i in range(len(window)) if i not in moving]
        if len(still) != 2 or not moving:
            raise _Unsupported(f"reduce_window_{kind} over {len(still)} untouched axes")
        perm = still + moving
        g = t.graph
        x = t.stored(inputs[0], perm)
        attrs = {
            "kernel_shape": [int(window[i]) for i in moving],
            "strides": [int(strides[i]) for i in moving],
            "pads": [int(padding[i][0]) for i in moving] + [int(padding[i][1]) for i in moving],
        }
        dilations = [int(p["window_dilation"][i]) for i in moving]
        if kind == "max":
            y = g.one("MaxPool", [x], dilations=dilations, **attrs)
        else:
            if any(d != 1 for d in dilations):
                raise _Unsupported("reduce_window_sum with window dilation")
            y = g.one("AveragePool", [x], count_include_pad=1, **attrs)
            size = np.asarray(np.prod(attrs["kernel_shape"]), eqn.invars[0].aval.dtype)
            y = g.one("Mul", [y, g.constant(size)])
        return Tensor(y, tuple(perm))

    return rule


def _pad(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    config = [(int(lo), int(hi), int(inner)) for lo, hi, inner in eqn.params["padding_config"]]
    if any(inner != 0 or lo < 0 or hi < 0 for lo, hi, inner in config):
        raise _Unsupported("a pad with interior or negative padding")
    pads = np.array([lo for lo, _, _ in config] + [hi for _, hi, _ in config], np.int64)
    g = t.graph
    return Tensor(g.one("Pad", [t.name(inputs[0]), g.constant(pads), t.name(inputs[1])]))


def _slice(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    p = eqn.params
    shape = eqn.invars[0].aval.shape
    strides = p["strides"] or (1,) * len(shape)
    axes, starts, ends, steps = [], [], [], []
    for axis, (start, limit, step) in enumerate(
            zip(p["start_indices"], p["limit_indices"], strides, strict=True)):
        if start == 0 and step == 1 and limit == shape[axis]:
            continue
        if not all(_known(d) for d in (start, limit)):
            raise _Unsupported("a slice along the batch axis")
        axes.append(axis)
        starts.append(int(start))
        ends.append(int(limit))
        steps.append(int(step))
    if not axes:
        return inputs[0] if not isinstance(inputs[0], PendingConv) else t.materialize(inputs[0])
    g = t.graph
    consts = [g.constant(np.array(v, np.int64)) for v in (starts, ends, axes, steps)]
    return Tensor(g.one("Slice", [t.name(inputs[0]), *consts]))


def _identity(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    return Tensor(t.name(inputs[0]))


def _log1p(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    one = t.graph.constant(np.asarray(1, eqn.invars[0].aval.dtype))
    return Tensor(t.graph.one("Log", [t.graph.one("Add", [t.name(inputs[0]), one])]))


def _ne(t: _Translator, eqn: Any, inputs: list[Value]) -> Value:
    return Tensor(t.graph.one("Not", [t.graph.one("Equal", [t.name(v) for v in inputs])]))


RULES: dict[str, Callable[..., Value | list[Value]]] = {
    "add": _affine("add"), "sub": _affine("sub"), "mul": _affine("mul"),
    "div": _elementwise("Div"), "max": _elementwise("Max"), "min": _elementwise("Min"),
    "pow": _elementwise("Pow"), "and": _elementwise("And"), "or": _elementwise("Or"),
    "gt": _elementwise("Greater"), "lt": _elementwise("Less"), "eq": _elementwise("Equal"),
    "ge": _elementwise("GreaterOrEqual"), "le": _elementwise("LessOrEqual"), "ne": _ne,
    "exp": _unary("Exp"), "log": _unary("Log"), "tanh": _unary("Tanh"),
    "logistic": _unary("Sigmoid"), "sqrt": _unary("Sqrt"), "rsqrt": _unary("Sqrt", "Reciprocal"),
    "neg": _unary("Neg"), "abs": _unary("Abs"), "erf": _unary("Erf"), "sign": _unary("Sign"),
    "floor": _unary("Floor"), "ceil": _unary("Ceil"), "not": _unary("Not"),
    "sin": _unary("Sin"), "cos": _unary("Cos"), "log1p": _log1p,
    "integer_pow": _integer_pow, "square": _square, "select_n": _select_n, "clamp": _clamp,
    "copy": _identity, "copy_p": _identity, "stop_gradient": _identity,
    "optimization_barrier": _identity,
    "conv_general_dilated": _conv, "dot_general": _dot_general,
    "reshape": _reshape, "transpose": _transpose, "broadcast_in_dim": _broadcast_in_dim,
    "squeeze": _squeeze, "expand_dims": _expand_dims, "concatenate": _concatenate,
    "convert_element_type": _convert, "pad": _pad, "slice": _slice,
    "reduce_sum": _reduce("ReduceSum"), "reduce_max": _reduce("ReduceMax"),
    "reduce_min": _reduce("ReduceMin"), "argmax": _argmax("ArgMax"),
    "argmin": _argmax("ArgMin"),
    "reduce_window_max": _pool("max"), "reduce_window_sum": _pool("sum"),
}


# -- the public functions ------------------------------------------------------------------

def forward_to_onnx(
    forward: Callable[[Any], Any],
    input_shape: tuple[int, ...],
    names: dict[int, str] | None = None,
    int8: dict[int, Any] | None = None,
) -> onnx.ModelProto:
    """The ONNX model computing ``forward(x)`` for float32 ``x`` of shape
    ``(batch, *input_shape)``, any batch size: input ``"input"``, output ``"logits"``.

    ``names`` maps ``id()`` of arrays ``forward`` closes over to initializer names;
    ``int8`` maps the ``id()`` of a kernel it closes over to its ``(int8 values, scale per
    output channel)``, to be written as those and a DequantizeLinear node (QDQ).
    """
    (batch,) = jax.export.symbolic_shape(BATCH)
    spec = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    closed = jax.make_jaxpr(forward)(spec)
    names, int8 = names or {}, int8 or {}
    consts = [np.asarray(c) for c in closed.consts]
    pairs = list(zip(consts, closed.consts, strict=True))
    graph = _Graph({id(a): names[id(c)] for a, c in pairs if id(c) in names},
                   {id(a): int8[id(c)] for a, c in pairs if id(c) in int8})
    graph.kept.extend(consts)  # their ids stay theirs while the graph is built
    translator = _Translator(graph, batch)
    try:
        (out,) = translator.run(closed.jaxpr, consts, [Tensor(INPUT)])
    except _Unsupported as unsupported:
        raise UnsupportedLayer(_unsupported_line(unsupported)) from None
    last = translator.name(out)
    graph.nodes.append(helper.make_node("Identity", [last], [OUTPUT]))
    out_aval = closed.jaxpr.outvars[0].aval
    out_shape = [BATCH if not _known(d) else int(d) for d in out_aval.shape]
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "lottery",
            [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT,
                                           [BATCH, *input_shape])],
            [helper.make_tensor_value_info(
                OUTPUT, helper.np_dtype_to_tensor_dtype(np.dtype(out_aval.dtype)), out_shape)],
            graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="lottery",
    )
    model.ir_version = min(model.ir_version, 8)  # what onnxruntime 1.17+ reads, opset 17
    onnx.checker.check_model(model)
    return model


def to_onnx(
    network: Network,
    params: Params,
    batch_stats: BatchStats,
    forward: Callable[[Any], Any] | None = None,
    quantized: Quantized | None = None,
) -> onnx.ModelProto:
    """The eval-mode forward pass of ``network`` as an ONNX model (see the module's
    docstring); ``forward(x) -> logits`` replaces the plain forward pass.

    ``quantized`` (:func:`lottery.deploy.quantize.quantize` of these params): its int8
    kernels are written as int8 initializers (a pruned weight is 0 there) with their scales,
    dequantized by DequantizeLinear nodes (QDQ, weights only; activations stay float32).
    """
    int8: dict[int, Any] = {}
    if quantized is not None:
        params, int8 = _dequantized(params, quantized)
    params, batch_stats = jax.device_put((params, batch_stats))
    if int8:  # the same arrays, now on the device
        flat = flatten(params)
        int8 = {id(flat[path]): pair for path, pair in int8.items()}
    names = {id(leaf): path for path, leaf in flatten(params).items()}
    names.update({id(leaf): f"batch_stats/{path}" for path, leaf in flatten(batch_stats).items()})
    if forward is None:
        # Flax's layers: the CPU kernels' eval-mode matrix product for small maps
        # (lottery.kernels.convolution.small_map_conv) is a plain Conv in ONNX.
        plain = network.with_kernels("xla")

        def forward(x: Any) -> Any:
            return plain.apply(params, batch_stats, x, train=False)[0]

    return forward_to_onnx(forward, network.input_shape, names, int8)


def _dequantized(params: Params, quantized: Quantized) -> tuple[Params, dict[str, Any]]:
    """``params`` with each int8 kernel of ``quantized`` replaced by int8 times its scale,
    and ``{path: (int8 values, scale per output channel)}``."""
    flat = dict(flatten(params))
    int8 = {}
    for path, values in quantized.int8.items():
        scale = np.asarray(quantized.scales[path], np.float32).reshape(-1)
        flat[path] = (values.astype(np.float32) * scale).astype(np.float32)
        int8[path] = (values, scale)
    return unflatten(flat), int8


def export_onnx(
    network: Network,
    params: Params,
    batch_stats: BatchStats,
    path: str | Path,
    forward: Callable[[Any], Any] | None = None,
    quantized: Quantized | None = None,
) -> int:
    """Write :func:`to_onnx` of ``network`` to ``path`` (``model.onnx``); its bytes."""
    data = to_onnx(network, params, batch_stats, forward, quantized).SerializeToString()
    atomic_write_bytes(path, data)
    return len(data)


def onnx_session(
    model: onnx.ModelProto | str | Path, threads: int | None = None
) -> onnxruntime.InferenceSession:
    """An onnxruntime session of ``model`` (a model or its file) on the CPU, with ``threads``
    intra-op threads (None: onnxruntime's default, every core)."""
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return onnxruntime.InferenceSession(
        source, options, providers=["CPUExecutionProvider"]
    )


def onnx_latency(
    model: onnx.ModelProto | str | Path,
    input_shape: tuple[int, ...],
    batch_size: int,
    threads: int | None = None,
    repeats: int = 20,
    budget_s: float | None = None,
) -> float:
    """Median seconds of one onnxruntime run of ``model`` on zeros of shape
    ``(batch_size, *input_shape)`` with ``threads`` threads (None: all cores; 1: single
    threaded), after a warm-up run, as :func:`lottery.deploy.latency.forward_latency`."""
    session = onnx_session(model, threads)
    feed = {INPUT: np.zeros((batch_size, *input_shape), np.float32)}
    session.run(None, feed)
    return timed_median(lambda: session.run(None, feed), repeats, budget_s)
