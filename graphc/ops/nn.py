"""Neural-network ops, public as ``gc.nn.<name>``.

Activations and losses are composites of elementwise and reduction
primitives: they need no gradient rules of their own, fuse into one kernel,
and their second derivatives come for free. Where a formula has a branch,
it is written with ``where`` on inputs clamped to each branch's domain, so
the branch not taken stays finite and its (discarded) gradient cannot turn
into nan; the derivative at a kink follows TF (relu'(0) = 0, elu'(0) = 1).

Convolution and pooling are primitives (LIBRARY lowering): NHWC inputs, HWIO
filters, "SAME"/"VALID" padding as TF. Their adjoints are primitives too
(``conv2d_backprop_input`` / ``conv2d_backprop_filter``, pooling grads),
whose own gradients are written in terms of each other, so second
derivatives work.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from .. import dtypes as _dt
from .. import shapes as _shapes
from ..errors import DTypeError, InvalidArgumentError, ShapeError
from ..graph import Tensor
from . import elementwise as ew
from .core import apply_op, constant, convert_operands, convert_to_tensor, identity, op_scope, stop_gradient
from .elementwise import sigmoid, tanh
from .reduce import reduce_logsumexp, reduce_max, reduce_sum
from .registry import LIBRARY, define, gradient
from .rules import require_dtype, same_dtype

__all__ = ["relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "softplus", "softsign", "silu", "swish",
           "sigmoid", "log_sigmoid", "tanh", "softmax", "log_softmax", "sigmoid_cross_entropy_with_logits",
           "softmax_cross_entropy_with_logits", "sparse_softmax_cross_entropy_with_logits", "l2_loss",
           "bias_add", "dropout", "conv2d", "conv2d_backprop_input", "conv2d_backprop_filter",
           "max_pool2d", "avg_pool2d", "max_pool", "avg_pool"]


# ---- activations -------------------------------------------------------------------------
def _float_input(x: Any, what: str) -> Tensor:
    x = convert_to_tensor(x)
    require_dtype(x, _dt.FLOATS, what, "cast it first, e.g. gc.cast(x, gc.float32)")
    return x


def _positive_part(x: Tensor) -> Tensor:
    """x where x > 0, else 0; its derivative at 0 is 0."""
    return ew.where(ew.greater(x, 0), x, 0)


def _nonpositive_part(x: Tensor) -> Tensor:
    """x where x <= 0, else 0; its derivative at 0 is 1."""
    return ew.where(ew.greater(x, 0), 0, x)


def relu(features: Any, name: Optional[str] = None) -> Tensor:
    """max(x, 0); the gradient at exactly 0 is 0, as in TF."""
    x = convert_to_tensor(features)
    require_dtype(x, _dt.NUMERIC, "relu features")
    with op_scope(name or "Relu", [x]):
        return _positive_part(x)


def relu6(features: Any, name: Optional[str] = None) -> Tensor:
    """min(max(x, 0), 6); the gradient is 1 strictly inside (0, 6), else 0."""
    x = convert_to_tensor(features)
    require_dtype(x, _dt.NUMERIC, "relu6 features")
    with op_scope(name or "Relu6", [x]):
        return ew.where(ew.greater(x, 0), ew.where(ew.less(x, 6), x, 6), 0)


def leaky_relu(features: Any, alpha: float = 0.2, name: Optional[str] = None) -> Tensor:
    """x for x > 0, alpha * x otherwise."""
    x = _float_input(features, "leaky_relu features")
    with op_scope(name or "LeakyRelu", [x]):
        return ew.where(ew.greater(x, 0), x, ew.multiply(x, alpha))


def elu(features: Any, name: Optional[str] = None) -> Tensor:
    """x for x > 0, exp(x) - 1 otherwise."""
    x = _float_input(features, "elu features")
    with op_scope(name or "Elu", [x]):
        return ew.where(ew.greater(x, 0), x, ew.expm1(_nonpositive_part(x)))


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(features: Any, name: Optional[str] = None) -> Tensor:
    """scale * (x for x > 0, alpha * (exp(x) - 1) otherwise), with the
    self-normalizing constants of Klambauer et al."""
    x = _float_input(features, "selu features")
    with op_scope(name or "Selu", [x]):
        neg = ew.multiply(ew.expm1(_nonpositive_part(x)), _SELU_ALPHA)
        return ew.multiply(ew.where(ew.greater(x, 0), x, neg), _SELU_SCALE)


def gelu(features: Any, approximate: bool = False, name: Optional[str] = None) -> Tensor:
    """x * Phi(x): exact with erf, or the tanh approximation."""
    x = _float_input(features, "gelu features")
    with op_scope(name or "Gelu", [x]):
        if approximate:
            cube = ew.multiply(x, ew.square(x))
            inner = ew.multiply(ew.add(x, ew.multiply(cube, 0.044715)), math.sqrt(2.0 / math.pi))
            cdf = ew.multiply(ew.add(ew.tanh(inner), 1.0), 0.5)
        else:
            cdf = ew.multiply(ew.add(ew.erf(ew.multiply(x, math.sqrt(0.5))), 1.0), 0.5)
        return ew.multiply(x, cdf)


def softplus(features: Any, name: Optional[str] = None) -> Tensor:
    """log(1 + exp(x)) without overflow: x + log1p(exp(-x)) for x > 0 and
    log1p(exp(x)) otherwise; the exponent is never positive, and each branch
    is computed on inputs clamped to its side so its derivative is finite."""
    x = _float_input(features, "softplus features")
    with op_scope(name or "Softplus", [x]):
        return _softplus(x)


def _softplus(x: Tensor) -> Tensor:
    pos, neg = _positive_part(x), _nonpositive_part(x)
    upper = ew.add(pos, ew.log1p(ew.exp(ew.negative(pos))))
    lower = ew.log1p(ew.exp(neg))
    return ew.where(ew.greater(x, 0), upper, lower)


def log_sigmoid(x: Any, name: Optional[str] = None) -> Tensor:
    """log(sigmoid(x)) = -softplus(-x), finite for every finite x."""
    x = _float_input(x, "log_sigmoid x")
    with op_scope(name or "LogSigmoid", [x]):
        return ew.negative(_softplus(ew.negative(x)))


def softsign(features: Any, name: Optional[str] = None) -> Tensor:
    """x / (1 + |x|)."""
    x = _float_input(features, "softsign features")
    with op_scope(name or "Softsign", [x]):
        return ew.divide(x, ew.add(ew.abs(x), 1.0))


def silu(features: Any, beta: float = 1.0, name: Optional[str] = None) -> Tensor:
    """x * sigmoid(beta * x) (also called swish)."""
    x = _float_input(features, "silu features")
    with op_scope(name or "Silu", [x]):
        return ew.multiply(x, sigmoid(x if beta == 1.0 else ew.multiply(x, beta)))


swish = silu


# ---- softmax and losses ----------------------------------------------------------------------
def _int_axis(x: Tensor, axis: Any, what: str) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise InvalidArgumentError(f"{what} axis must be an int, got {axis!r}")
    if x.shape is None:
        return int(axis)
    if len(x.shape) == 0:
        raise ShapeError(f"{what} needs a tensor of rank >= 1, got a scalar")
    return _shapes.normalize_axis(int(axis), len(x.shape), what=f"{what} axis")


def _shifted(x: Tensor, axis: int) -> Tensor:
    # Subtracting the max makes every exponent <= 0. Softmax does not depend
    # on the shift, so keeping it out of the gradient changes nothing.
    return ew.subtract(x, stop_gradient(reduce_max(x, axis=axis, keepdims=True)))


def softmax(logits: Any, axis: int = -1, name: Optional[str] = None) -> Tensor:
    """exp(x) / sum(exp(x)) along ``axis``, computed on x - max(x)."""
    x = _float_input(logits, "softmax logits")
    axis = _int_axis(x, axis, "softmax")
    with op_scope(name or "Softmax", [x]):
        e = ew.exp(_shifted(x, axis))
        return ew.divide(e, reduce_sum(e, axis=axis, keepdims=True))


def _log_softmax(x: Tensor, axis: int) -> Tensor:
    z = _shifted(x, axis)
    return ew.subtract(z, ew.log(reduce_sum(ew.exp(z), axis=axis, keepdims=True)))


def log_softmax(logits: Any, axis: int = -1, name: Optional[str] = None) -> Tensor:
    """x - log(sum(exp(x))) along ``axis``, finite for finite logits."""
    x = _float_input(logits, "log_softmax logits")
    axis = _int_axis(x, axis, "log_softmax")
    with op_scope(name or "LogSoftmax", [x]):
        return _log_softmax(x, axis)


def _labels_logits(labels: Any, logits: Any, what: str) -> Tuple[Tensor, Tensor]:
    if labels is None or logits is None:
        raise InvalidArgumentError(f"{what} needs both labels= and logits=")
    logits = _float_input(logits, f"{what} logits")
    labels = convert_to_tensor(labels) if isinstance(labels, Tensor) else convert_to_tensor(
        np.asarray(labels, dtype=logits.dtype))
    if labels.dtype != logits.dtype:
        if labels.dtype.kind != "f" and labels.dtype.kind not in "iub":
            raise DTypeError(f"{what}: labels must be numeric, got {labels.dtype.name}")
        labels = ew.cast(labels, logits.dtype)
    try:
        _shapes.merge(labels.shape, logits.shape)
    except ShapeError:
        raise ShapeError(f"{what}: labels shape {_shapes.fmt(labels.shape)} and logits shape "
                         f"{_shapes.fmt(logits.shape)} must be equal") from None
    return labels, logits


def sigmoid_cross_entropy_with_logits(labels: Any = None, logits: Any = None,
                                      name: Optional[str] = None) -> Tensor:
    """Elementwise -z*log(sigmoid(x)) - (1-z)*log(1-sigmoid(x)), computed
    as softplus(x) - x*z = max(x, 0) - x*z + log1p(exp(-|x|)): finite for any
    finite logits. labels and logits have the same shape."""
    z, x = _labels_logits(labels, logits, "sigmoid_cross_entropy_with_logits")
    with op_scope(name or "logistic_loss", [z, x]):
        return ew.subtract(_softplus(x), ew.multiply(x, z))


def softmax_cross_entropy_with_logits(labels: Any = None, logits: Any = None, axis: int = -1,
                                      name: Optional[str] = None) -> Tensor:
    """-sum(labels * log_softmax(logits)) along ``axis`` (the class axis is
    removed). labels is a probability distribution per row; as in TF2, the
    gradient also flows into labels (wrap them in gc.stop_gradient if not
    wanted)."""
    z, x = _labels_logits(labels, logits, "softmax_cross_entropy_with_logits")
    axis = _int_axis(x, axis, "softmax_cross_entropy_with_logits")
    with op_scope(name or "softmax_cross_entropy_with_logits", [z, x]):
        return ew.negative(reduce_sum(ew.multiply(z, _log_softmax(x, axis)), axis=axis))


def sparse_softmax_cross_entropy_with_logits(labels: Any = None, logits: Any = None,
                                             name: Optional[str] = None) -> Tensor:
    """-log_softmax(logits)[..., label]: labels are int32/int64 class indices
    of shape ``logits.shape[:-1]``; the number of classes (the last dim of
    logits) must be known when the graph is built. A label outside
    [0, num_classes) selects no class (the loss is then 0)."""
    if labels is None or logits is None:
        raise InvalidArgumentError("sparse_softmax_cross_entropy_with_logits needs both labels= and logits=")
    x = _float_input(logits, "sparse_softmax_cross_entropy_with_logits logits")
    z = convert_to_tensor(labels)
    require_dtype(z, _dt.INTEGERS, "labels", "sparse labels are class indices")
    if x.shape is not None and len(x.shape) == 0:
        raise ShapeError("sparse_softmax_cross_entropy_with_logits: logits must have rank >= 1")
    if x.shape is not None:
        try:
            _shapes.merge(z.shape, x.shape[:-1])
        except ShapeError:
            raise ShapeError(f"sparse_softmax_cross_entropy_with_logits: labels shape {_shapes.fmt(z.shape)} must "
                             f"be logits shape {_shapes.fmt(x.shape)} without its last dim") from None
    depth = x.shape[-1] if x.shape is not None else None
    if depth is None:
        raise ShapeError("sparse_softmax_cross_entropy_with_logits: the number of classes (last dim of logits) "
                         f"must be known when the graph is built, got logits shape {_shapes.fmt(x.shape)}")
    from .shape import expand_dims
    with op_scope(name or "sparse_softmax_cross_entropy_with_logits", [z, x]):
        classes = constant(np.arange(depth, dtype=z.dtype))
        hit = ew.equal(expand_dims(z, -1), classes)
        # where, not multiply: a -inf log-probability of another class must not give 0 * -inf
        picked = ew.where(hit, _log_softmax(x, -1), 0)
        return ew.negative(reduce_sum(picked, axis=-1))


def l2_loss(t: Any, name: Optional[str] = None) -> Tensor:
    """sum(t ** 2) / 2, a scalar."""
    x = _float_input(t, "l2_loss t")
    with op_scope(name or "L2Loss", [x]):
        return ew.multiply(reduce_sum(ew.square(x)), 0.5)


def bias_add(value: Any, bias: Any, data_format: Optional[str] = None, name: Optional[str] = None) -> Tensor:
    """value + bias, with the 1-D ``bias`` added along the channel dim: the
    last dim (NHWC, default) or dim 1 ("NCHW"/"NC..." formats)."""
    value, bias = convert_operands(value, bias)
    if bias.shape is not None and len(bias.shape) != 1:
        raise ShapeError(f"bias_add: bias must be 1-D, got shape {_shapes.fmt(bias.shape)}")
    if value.shape is not None and len(value.shape) < 2:
        raise ShapeError(f"bias_add: value must have rank >= 2, got shape {_shapes.fmt(value.shape)}")
    channels_first = data_format is not None and data_format.upper().startswith("NC")
    if data_format is not None and not channels_first and not data_format.upper().endswith("C"):
        raise InvalidArgumentError(f"bias_add: unknown data_format {data_format!r}")
    channel_axis = 1 if channels_first else -1
    c = value.shape[channel_axis] if value.shape is not None else None
    if c is not None and bias.shape is not None and bias.shape[0] is not None and c != bias.shape[0]:
        raise ShapeError(f"bias_add: bias of size {bias.shape[0]} does not match the {c} channels of value "
                         f"{_shapes.fmt(value.shape)}")
    with op_scope(name or "BiasAdd", [value, bias]):
        if channels_first:
            if value.shape is None:
                raise ShapeError("bias_add with channels-first data needs a value of known rank")
            from .shape import reshape
            bias = reshape(bias, [-1] + [1] * (len(value.shape) - 2))
        return ew.add(value, bias)


def dropout(x: Any, rate: Any, noise_shape: Any = None, seed: Optional[int] = None,
            name: Optional[str] = None) -> Tensor:
    """Zeroes each element with probability ``rate`` and scales the rest by
    1 / (1 - rate), so the expectation is unchanged (TF2 semantics).
    ``noise_shape`` (broadcastable to x's shape) shares one draw along the
    dims where it is 1. rate=0 returns x unchanged."""
    from .random import random_uniform
    x = _float_input(x, "dropout x")
    if not isinstance(rate, Tensor):
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise InvalidArgumentError(f"dropout rate must be in [0, 1), got {rate}")
        if rate == 0.0:
            return x if name is None else identity(x, name=name)
    with op_scope(name or "dropout", [x, rate]):
        if noise_shape is None:
            noise_shape = list(x.shape) if _shapes.is_fully_defined(x.shape) else _shape_of(x)
        u = random_uniform(noise_shape, dtype=x.dtype, seed=seed)
        keep = ew.greater_equal(u, rate if not isinstance(rate, Tensor) else ew.cast(rate, x.dtype))
        scale = 1.0 / (1.0 - rate) if not isinstance(rate, Tensor) else \
            ew.divide(1.0, ew.subtract(1.0, ew.cast(rate, x.dtype)))
        return ew.where(keep, ew.multiply(x, scale), 0)


def _shape_of(x: Tensor) -> Tensor:
    from .shape import shape_of
    return shape_of(x)


# ---- convolution geometry ---------------------------------------------------------------------
Padding = Union[str, Tuple[Tuple[int, int], Tuple[int, int]]]


def _hw_pair(value: Any, what: str) -> Tuple[int, int]:
    """An int, a pair (h, w), or TF's 4-vector [1, h, w, 1] (NHWC)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        vals = (int(value), int(value))
    else:
        try:
            seq = [int(v) for v in value]
        except TypeError:
            raise InvalidArgumentError(f"{what} must be an int or a list of 2 or 4 ints, got {value!r}") from None
        if len(seq) == 4:
            if seq[0] != 1 or seq[3] != 1:
                raise InvalidArgumentError(f"{what} {seq} must be 1 in the batch and channel dims (NHWC)")
            vals = (seq[1], seq[2])
        elif len(seq) == 2:
            vals = (seq[0], seq[1])
        elif len(seq) == 1:
            vals = (seq[0], seq[0])
        else:
            raise InvalidArgumentError(f"{what} must be an int or a list of 2 or 4 ints, got {value!r}")
    if min(vals) < 1:
        raise InvalidArgumentError(f"{what} must be positive, got {value!r}")
    return vals


def _padding_attr(padding: Any, allow_explicit: bool = True) -> Padding:
    """"SAME", "VALID", or explicit ((top, bottom), (left, right)) pads
    (TF's 4-pair NHWC form is accepted too)."""
    if isinstance(padding, str):
        p = padding.upper()
        if p not in ("SAME", "VALID"):
            raise InvalidArgumentError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
        return p
    if allow_explicit:
        try:
            pairs = [tuple(int(v) for v in pair) for pair in padding]
        except TypeError:
            pairs = []
        if len(pairs) == 4 and pairs[0] == (0, 0) and pairs[3] == (0, 0):
            pairs = pairs[1:3]
        if len(pairs) == 2 and all(len(p) == 2 and min(p) >= 0 for p in pairs):
            return (pairs[0], pairs[1])
    raise InvalidArgumentError(f"padding must be 'SAME', 'VALID'"
                               f"{' or explicit [[top, bottom], [left, right]] pads' if allow_explicit else ''}, "
                               f"got {padding!r}")


def _axis_geometry(n: int, k: int, s: int, d: int, padding: Any, axis: int) -> Tuple[int, int, int]:
    """(output size, pad before, pad after) along one spatial axis."""
    eff = (k - 1) * d + 1
    if padding == "SAME":
        out = -(-n // s)
        total = max((out - 1) * s + eff - n, 0)
        return out, total // 2, total - total // 2
    before, after = (0, 0) if padding == "VALID" else padding[axis]
    span = n + before + after
    if span < eff:
        raise ShapeError(f"the window (size {eff} with dilation) is larger than the padded input ({span}) "
                         f"along spatial dim {axis}")
    return (span - eff) // s + 1, before, after


def _static_out(n: Optional[int], k: Optional[int], s: int, d: int, padding: Any, axis: int) -> Optional[int]:
    if n is None:
        return None
    if padding == "SAME":
        return -(-n // s)
    if k is None:
        return None
    return _axis_geometry(n, k, s, d, padding, axis)[0]


def _geometry(in_hw: Sequence[int], k_hw: Sequence[int], strides, dilations, padding):
    (oh, pt, pb) = _axis_geometry(in_hw[0], k_hw[0], strides[0], dilations[0], padding, 0)
    (ow, pl, pr) = _axis_geometry(in_hw[1], k_hw[1], strides[1], dilations[1], padding, 1)
    return (oh, ow), ((pt, pb), (pl, pr))


def _window(padded: np.ndarray, i: int, j: int, out_hw, strides, dilations) -> np.ndarray:
    """The view of ``padded`` that window offset (i, j) reads for every output position."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, strides, dilations
    return padded[:, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw, :]


def _pad(x: np.ndarray, pads, value: float = 0.0) -> np.ndarray:
    (pt, pb), (pl, pr) = pads
    if not (pt or pb or pl or pr):
        return x
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def _crop(x: np.ndarray, pads, hw) -> np.ndarray:
    (pt, _), (pl, _) = pads
    return x[:, pt: pt + hw[0], pl: pl + hw[1], :]


def _check_rank4(t: Tensor, what: str) -> None:
    if t.shape is not None and len(t.shape) != 4:
        raise ShapeError(f"{what} must have rank 4, got shape {_shapes.fmt(t.shape)}")


def _dim(t: Tensor, i: int) -> Optional[int]:
    return None if t.shape is None else t.shape[i]


def _merge_dims(a: Optional[int], b: Optional[int], what: str) -> Optional[int]:
    if a is not None and b is not None and a != b:
        raise ShapeError(f"{what}: {a} and {b} differ")
    return a if a is not None else b


def _shape_input_static(t: Tensor, what: str) -> Tuple[Optional[int], ...]:
    from .random import static_shape_from_shape_tensor
    shape = static_shape_from_shape_tensor(t)
    if shape is None:
        return (None,) * 4
    if len(shape) != 4:
        raise ShapeError(f"{what} must have 4 elements, got {len(shape)}")
    return shape


def _shape_tensor_of(x: Tensor) -> Tensor:
    """x's shape as a 1-D int32 tensor: a constant when static."""
    if _shapes.is_fully_defined(x.shape):
        return constant(np.asarray(x.shape, dtype=np.int32))
    return _shape_of(x)


# ---- conv2d and its adjoints --------------------------------------------------------------------
_CONV_ATTRS = ("strides", "padding", "dilations")


def _infer_conv2d(x, w, *, strides, padding, dilations):
    dtype = same_dtype(x, w)
    require_dtype(x, _dt.FLOATS, "input")
    _check_rank4(x, "input (NHWC)")
    _check_rank4(w, "filters (HWIO)")
    c_in, c_w = _dim(x, 3), _dim(w, 2)
    if c_in is not None and c_w is not None and c_in != c_w:
        raise ShapeError(f"input has {c_in} channels but the filters (HWIO) expect {c_w}")
    oh = _static_out(_dim(x, 1), _dim(w, 0), strides[0], dilations[0], padding, 0)
    ow = _static_out(_dim(x, 2), _dim(w, 1), strides[1], dilations[1], padding, 1)
    return (_dim(x, 0), oh, ow, _dim(w, 3)), dtype


@define("conv2d", lowering=LIBRARY, inputs=("input", "filters"), attrs=_CONV_ATTRS, dtypes="float",
        infer=_infer_conv2d, doc="2-D convolution (cross-correlation), NHWC input, HWIO filters.")
def _conv2d(x, w, *, strides, padding, dilations):
    n, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    out_hw, pads = _geometry((h, wd), (kh, kw), strides, dilations, padding)
    out = np.zeros((n,) + out_hw + (o,), dtype=x.dtype)
    if out.size == 0:
        return out
    xp = _pad(x, pads)
    for i in range(kh):
        for j in range(kw):
            out += _window(xp, i, j, out_hw, strides, dilations) @ w[i, j]
    return out


def _infer_backprop_input(sizes, w, g, *, strides, padding, dilations):
    dtype = same_dtype(w, g)
    require_dtype(w, _dt.FLOATS, "filters")
    _check_rank4(w, "filters (HWIO)")
    _check_rank4(g, "out_backprop")
    static = _shape_input_static(sizes, "input_sizes")
    n = _merge_dims(static[0], _dim(g, 0), "batch sizes of input_sizes and out_backprop")
    c = _merge_dims(static[3], _dim(w, 2), "channels of input_sizes and filters")
    _merge_dims(_dim(g, 3), _dim(w, 3), "channels of out_backprop and output channels of filters")
    for axis in (0, 1):
        expect = _static_out(static[1 + axis], _dim(w, axis), strides[axis], dilations[axis], padding, axis)
        _merge_dims(expect, _dim(g, 1 + axis), f"out_backprop spatial dim {axis} and the conv2d output size")
    return (n, static[1], static[2], c), dtype


@define("conv2d_backprop_input", lowering=LIBRARY, inputs=("input_sizes", "filters", "out_backprop"),
        attrs=_CONV_ATTRS, dtypes="float", infer=_infer_backprop_input,
        doc="Gradient of conv2d with respect to its input (a transposed convolution).")
def _conv2d_backprop_input(sizes, w, g, *, strides, padding, dilations):
    n, h, wd, c = (int(v) for v in sizes)
    kh, kw = w.shape[:2]
    out_hw, pads = _geometry((h, wd), (kh, kw), strides, dilations, padding)
    if g.shape[1:3] != out_hw:
        raise ValueError(f"out_backprop spatial size {g.shape[1:3]} does not match the conv2d output {out_hw}")
    (pt, pb), (pl, pr) = pads
    dxp = np.zeros((n, h + pt + pb, wd + pl + pr, c), dtype=g.dtype)
    if g.size:
        for i in range(kh):
            for j in range(kw):
                _window(dxp, i, j, out_hw, strides, dilations)[...] += g @ w[i, j].T
    return np.ascontiguousarray(_crop(dxp, pads, (h, wd)))


def _infer_backprop_filter(x, sizes, g, *, strides, padding, dilations):
    dtype = same_dtype(x, g)
    require_dtype(x, _dt.FLOATS, "input")
    _check_rank4(x, "input (NHWC)")
    _check_rank4(g, "out_backprop")
    static = _shape_input_static(sizes, "filter_sizes")
    _merge_dims(_dim(x, 0), _dim(g, 0), "batch sizes of input and out_backprop")
    c = _merge_dims(static[2], _dim(x, 3), "input channels of filter_sizes and input")
    o = _merge_dims(static[3], _dim(g, 3), "output channels of filter_sizes and out_backprop")
    for axis in (0, 1):
        expect = _static_out(_dim(x, 1 + axis), static[axis], strides[axis], dilations[axis], padding, axis)
        _merge_dims(expect, _dim(g, 1 + axis), f"out_backprop spatial dim {axis} and the conv2d output size")
    return (static[0], static[1], c, o), dtype


@define("conv2d_backprop_filter", lowering=LIBRARY, inputs=("input", "filter_sizes", "out_backprop"),
        attrs=_CONV_ATTRS, dtypes="float", infer=_infer_backprop_filter,
        doc="Gradient of conv2d with respect to its filters.")
def _conv2d_backprop_filter(x, sizes, g, *, strides, padding, dilations):
    kh, kw, c, o = (int(v) for v in sizes)
    out_hw, pads = _geometry(x.shape[1:3], (kh, kw), strides, dilations, padding)
    if g.shape[1:3] != out_hw:
        raise ValueError(f"out_backprop spatial size {g.shape[1:3]} does not match the conv2d output {out_hw}")
    dw = np.zeros((kh, kw, c, o), dtype=x.dtype)
    if g.size == 0:
        return dw
    xp = _pad(x, pads)
    g2t = g.reshape(-1, o).T
    for i in range(kh):
        for j in range(kw):
            # (O, NHW) @ (NHW, C) keeps both operands in the layout BLAS reads fastest
            dw[i, j] = (g2t @ _window(xp, i, j, out_hw, strides, dilations).reshape(-1, c)).T
    return dw


def _conv_attrs(strides: Any, padding: Any, dilations: Any, data_format: Optional[str]) -> dict:
    if data_format not in (None, "NHWC"):
        raise InvalidArgumentError(f"only data_format='NHWC' is supported, got {data_format!r}")
    return {"strides": _hw_pair(strides, "strides"), "padding": _padding_attr(padding),
            "dilations": _hw_pair(dilations, "dilations")}


def conv2d(input: Any, filters: Any, strides: Any, padding: Any = "SAME", data_format: Optional[str] = "NHWC",
           dilations: Any = 1, name: Optional[str] = None) -> Tensor:
    """2-D convolution of an NHWC ``input`` with HWIO ``filters``.
    ``strides``/``dilations``: an int, [h, w] or [1, h, w, 1]; ``padding``:
    "SAME" (output ceil(in / stride)), "VALID", or explicit pads."""
    x, w = convert_operands(input, filters)
    return apply_op("conv2d", [x, w], _conv_attrs(strides, padding, dilations, data_format), name=name or "Conv2D")


def conv2d_backprop_input(input_sizes: Any, filters: Any, out_backprop: Any, strides: Any, padding: Any = "SAME",
                          data_format: Optional[str] = "NHWC", dilations: Any = 1,
                          name: Optional[str] = None) -> Tensor:
    """The gradient of conv2d with respect to an input of shape
    ``input_sizes`` (a list of 4 ints or a 1-D int tensor)."""
    from .random import shape_tensor
    w, g = convert_operands(filters, out_backprop)
    return apply_op("conv2d_backprop_input", [shape_tensor(input_sizes), w, g],
                    _conv_attrs(strides, padding, dilations, data_format), name=name or "Conv2DBackpropInput")


def conv2d_backprop_filter(input: Any, filter_sizes: Any, out_backprop: Any, strides: Any, padding: Any = "SAME",
                           data_format: Optional[str] = "NHWC", dilations: Any = 1,
                           name: Optional[str] = None) -> Tensor:
    """The gradient of conv2d with respect to filters of shape
    ``filter_sizes`` (a list of 4 ints or a 1-D int tensor)."""
    from .random import shape_tensor
    x, g = convert_operands(input, out_backprop)
    return apply_op("conv2d_backprop_filter", [x, shape_tensor(filter_sizes), g],
                    _conv_attrs(strides, padding, dilations, data_format), name=name or "Conv2DBackpropFilter")


def _same_conv(op, primitive: str, inputs: list) -> Tensor:
    return apply_op(primitive, inputs, {k: op.attrs[k] for k in _CONV_ATTRS})


@gradient("conv2d")
def _conv2d_grad(op, g):
    x, w = op.inputs
    return [_same_conv(op, "conv2d_backprop_input", [_shape_tensor_of(x), w, g]),
            _same_conv(op, "conv2d_backprop_filter", [x, _shape_tensor_of(w), g])]


@gradient("conv2d_backprop_input")
def _conv2d_backprop_input_grad(op, dz):
    # z = A_w^T g is bilinear in (w, g): dg = A_w dz = conv2d(dz, w), and
    # <dz, A_w^T g> = <conv2d(dz, w), g> gives dw = backprop_filter(dz, g).
    _, w, g = op.inputs
    return [None,
            _same_conv(op, "conv2d_backprop_filter", [dz, _shape_tensor_of(w), g]),
            _same_conv(op, "conv2d", [dz, w])]


@gradient("conv2d_backprop_filter")
def _conv2d_backprop_filter_grad(op, dz):
    # z = dW(x, g) with <dz, z> = <conv2d(x, dz), g>: dg = conv2d(x, dz) and
    # dx = backprop_input(shape(x), dz, g).
    x, _, g = op.inputs
    return [_same_conv(op, "conv2d_backprop_input", [_shape_tensor_of(x), dz, g]),
            None,
            _same_conv(op, "conv2d", [x, dz])]


# ---- pooling ---------------------------------------------------------------------------------------
_POOL_ATTRS = ("ksize", "strides", "padding")
_ONES = (1, 1)


def _infer_pool(x, *, ksize, strides, padding):
    require_dtype(x, _dt.FLOATS, "input")
    _check_rank4(x, "input (NHWC)")
    oh = _static_out(_dim(x, 1), ksize[0], strides[0], 1, padding, 0)
    ow = _static_out(_dim(x, 2), ksize[1], strides[1], 1, padding, 1)
    return (_dim(x, 0), oh, ow, _dim(x, 3)), x.dtype


def _pool_geometry(x_shape, ksize, strides, padding):
    return _geometry(x_shape[1:3], ksize, strides, _ONES, padding)


@define("max_pool2d", lowering=LIBRARY, inputs=("input",), attrs=_POOL_ATTRS, dtypes="float",
        infer=_infer_pool, doc="Max over each ksize window (NHWC); padding never wins.")
def _max_pool2d(x, *, ksize, strides, padding):
    out_hw, pads = _pool_geometry(x.shape, ksize, strides, padding)
    if x.shape[0] * x.shape[3] * out_hw[0] * out_hw[1] == 0:
        return np.zeros((x.shape[0],) + out_hw + (x.shape[3],), dtype=x.dtype)
    xp = _pad(x, pads, -np.inf)
    out = np.full((x.shape[0],) + out_hw + (x.shape[3],), -np.inf, dtype=x.dtype)
    for i in range(ksize[0]):
        for j in range(ksize[1]):
            np.maximum(out, _window(xp, i, j, out_hw, strides, _ONES), out=out)
    return out


def _max_pool_hits(x, y, ksize, strides, padding):
    """For each window offset, the mask of output positions whose max sits
    there (the first offset in row-major order on ties, as TF's argmax)."""
    out_hw, pads = _pool_geometry(x.shape, ksize, strides, padding)
    xp = _pad(x, pads, -np.inf)
    taken = np.zeros(y.shape, dtype=bool)
    for i in range(ksize[0]):
        for j in range(ksize[1]):
            hit = (_window(xp, i, j, out_hw, strides, _ONES) == y) & ~taken
            taken |= hit
            yield i, j, hit, out_hw, pads


def _infer_pool_grad(x, y, g, *, ksize, strides, padding):
    same_dtype(x, y, g)
    expect, dtype = _infer_pool(x, ksize=ksize, strides=strides, padding=padding)
    for t, what in ((y, "orig_output"), (g, "grad")):
        if t.shape is not None:
            try:
                _shapes.merge(expect, t.shape)
            except ShapeError:
                raise ShapeError(f"{what} shape {_shapes.fmt(t.shape)} is not the pooled shape "
                                 f"{_shapes.fmt(expect)}") from None
    return x.shape, dtype


@define("max_pool2d_grad", lowering=LIBRARY, inputs=("orig_input", "orig_output", "grad"), attrs=_POOL_ATTRS,
        dtypes="float", infer=_infer_pool_grad, doc="Gradient of max_pool2d: grad routed to each window's max.")
def _max_pool2d_grad(x, y, g, *, ksize, strides, padding):
    out_hw, pads = _pool_geometry(x.shape, ksize, strides, padding)
    (pt, pb), (pl, pr) = pads
    dxp = np.zeros((x.shape[0], x.shape[1] + pt + pb, x.shape[2] + pl + pr, x.shape[3]), dtype=x.dtype)
    if g.size:
        for i, j, hit, out_hw, pads in _max_pool_hits(x, y, ksize, strides, padding):
            _window(dxp, i, j, out_hw, strides, _ONES)[...] += np.where(hit, g, 0)
    return np.ascontiguousarray(_crop(dxp, pads, x.shape[1:3]))


def _infer_pool_grad_grad(x, y, dz, *, ksize, strides, padding):
    same_dtype(x, y, dz)
    if x.shape is not None and dz.shape is not None:
        _shapes.merge(x.shape, dz.shape)
    return y.shape, y.dtype


@define("max_pool2d_grad_grad", lowering=LIBRARY, inputs=("orig_input", "orig_output", "grad"),
        attrs=_POOL_ATTRS, dtypes="float", infer=_infer_pool_grad_grad,
        doc="Gradient of max_pool2d_grad with respect to its grad: picks `grad` at each window's max.")
def _max_pool2d_grad_grad(x, y, dz, *, ksize, strides, padding):
    out = np.zeros(y.shape, dtype=y.dtype)
    if out.size == 0:
        return out
    _, pads = _pool_geometry(x.shape, ksize, strides, padding)
    dzp = _pad(dz, pads)
    for i, j, hit, out_hw, _ in _max_pool_hits(x, y, ksize, strides, padding):
        out += np.where(hit, _window(dzp, i, j, out_hw, strides, _ONES), 0)
    return out


def _same_pool(op, primitive: str, inputs: list) -> Tensor:
    return apply_op(primitive, inputs, {k: op.attrs[k] for k in _POOL_ATTRS})


@gradient("max_pool2d")
def _max_pool2d_gradient(op, g):
    return [_same_pool(op, "max_pool2d_grad", [op.inputs[0], op.outputs[0], g])]


@gradient("max_pool2d_grad")
def _max_pool2d_grad_gradient(op, dz):
    # linear in grad; the routing (which element is the max) is piecewise constant
    x, y, _ = op.inputs
    return [None, None, _same_pool(op, "max_pool2d_grad_grad", [x, y, dz])]


@gradient("max_pool2d_grad_grad")
def _max_pool2d_grad_grad_gradient(op, g):
    x, y, _ = op.inputs
    return [None, None, _same_pool(op, "max_pool2d_grad", [x, y, g])]


def _window_counts(hw, ksize, strides, padding):
    """Number of real (unpadded) elements under each output window, (OH, OW, 1)."""
    out_hw, pads = _geometry(hw, ksize, strides, _ONES, padding)
    counts = []
    for axis in (0, 1):
        start = np.arange(out_hw[axis]) * strides[axis] - pads[axis][0]
        stop = start + ksize[axis]
        counts.append(np.minimum(stop, hw[axis]) - np.maximum(start, 0))
    return np.outer(counts[0], counts[1])[:, :, None]


@define("avg_pool2d", lowering=LIBRARY, inputs=("input",), attrs=_POOL_ATTRS, dtypes="float",
        infer=_infer_pool, doc="Mean over each ksize window (NHWC); padding is not counted.")
def _avg_pool2d(x, *, ksize, strides, padding):
    out_hw, pads = _pool_geometry(x.shape, ksize, strides, padding)
    out = np.zeros((x.shape[0],) + out_hw + (x.shape[3],), dtype=x.dtype)
    if out.size == 0:
        return out
    xp = _pad(x, pads)
    for i in range(ksize[0]):
        for j in range(ksize[1]):
            out += _window(xp, i, j, out_hw, strides, _ONES)
    out /= _window_counts(x.shape[1:3], ksize, strides, padding).astype(x.dtype)
    return out


def _infer_avg_pool_grad(sizes, g, *, ksize, strides, padding):
    require_dtype(g, _dt.FLOATS, "grad")
    _check_rank4(g, "grad")
    static = _shape_input_static(sizes, "orig_input_shape")
    n = _merge_dims(static[0], _dim(g, 0), "batch sizes of orig_input_shape and grad")
    c = _merge_dims(static[3], _dim(g, 3), "channels of orig_input_shape and grad")
    for axis in (0, 1):
        expect = _static_out(static[1 + axis], ksize[axis], strides[axis], 1, padding, axis)
        _merge_dims(expect, _dim(g, 1 + axis), f"grad spatial dim {axis} and the pooled size")
    return (n, static[1], static[2], c), g.dtype


@define("avg_pool2d_grad", lowering=LIBRARY, inputs=("orig_input_shape", "grad"), attrs=_POOL_ATTRS,
        dtypes="float", infer=_infer_avg_pool_grad, doc="Gradient of avg_pool2d (spreads grad over each window).")
def _avg_pool2d_grad(sizes, g, *, ksize, strides, padding):
    n, h, w, c = (int(v) for v in sizes)
    out_hw, pads = _geometry((h, w), ksize, strides, _ONES, padding)
    (pt, pb), (pl, pr) = pads
    dxp = np.zeros((n, h + pt + pb, w + pl + pr, c), dtype=g.dtype)
    if g.size:
        share = g / _window_counts((h, w), ksize, strides, padding).astype(g.dtype)
        for i in range(ksize[0]):
            for j in range(ksize[1]):
                _window(dxp, i, j, out_hw, strides, _ONES)[...] += share
    return np.ascontiguousarray(_crop(dxp, pads, (h, w)))


@gradient("avg_pool2d")
def _avg_pool2d_gradient(op, g):
    return [_same_pool(op, "avg_pool2d_grad", [_shape_tensor_of(op.inputs[0]), g])]


@gradient("avg_pool2d_grad")
def _avg_pool2d_grad_gradient(op, dz):
    return [None, _same_pool(op, "avg_pool2d", [dz])]


def _pool_attrs(ksize: Any, strides: Any, padding: Any, data_format: Optional[str]) -> dict:
    if data_format not in (None, "NHWC"):
        raise InvalidArgumentError(f"only data_format='NHWC' is supported, got {data_format!r}")
    return {"ksize": _hw_pair(ksize, "ksize"), "strides": _hw_pair(strides, "strides"),
            "padding": _padding_attr(padding, allow_explicit=False)}


def max_pool2d(input: Any, ksize: Any, strides: Any, padding: Any = "VALID", data_format: Optional[str] = "NHWC",
               name: Optional[str] = None) -> Tensor:
    """Max pooling over ``ksize`` windows of an NHWC tensor (ksize/strides:
    an int, [h, w] or [1, h, w, 1]; padding "SAME" or "VALID")."""
    x = convert_to_tensor(input)
    return apply_op("max_pool2d", [x], _pool_attrs(ksize, strides, padding, data_format), name=name or "MaxPool")


def avg_pool2d(input: Any, ksize: Any, strides: Any, padding: Any = "VALID", data_format: Optional[str] = "NHWC",
               name: Optional[str] = None) -> Tensor:
    """Average pooling over ``ksize`` windows of an NHWC tensor; with "SAME"
    padding each mean is over the real elements only (as TF)."""
    x = convert_to_tensor(input)
    return apply_op("avg_pool2d", [x], _pool_attrs(ksize, strides, padding, data_format), name=name or "AvgPool")


max_pool = max_pool2d
avg_pool = avg_pool2d
