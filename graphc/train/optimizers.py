"""Optimizers: gradient-based variable updates built as graph ops (TF1 style).

``minimize(loss)`` = ``compute_gradients(loss)`` (symbolic gradients, see
:func:`graphc.gradients`) + ``apply_gradients(grads_and_vars)`` (one op that
updates every variable). Optimizer state (momentum accumulators, Adam's
moments) lives in *slot* variables: ordinary non-trainable ``gc.Variable``s
named ``"<var>/<OptimizerName>"`` (``"..._1"`` for a second slot), so they are
initialized by ``gc.global_variables_initializer()`` and saved by the Saver.

Ordering within one run follows API.md: every read of a variable sees its
value at the start of the run unless it is ordered after an update. So the
gradients (which read the variables) use the pre-update values, each update
uses the value its slot update outputs, and per-step state (Adam's beta powers,
the global step) is advanced under control dependencies on all updates.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import ops
from ..autodiff import gradients
from ..errors import GradientError, InvalidArgumentError
from ..graph import Graph, Operation, Tensor, get_default_graph
from ..ops.core import is_tensor_like
from ..ops.state import Variable

__all__ = ["Optimizer", "GradientDescentOptimizer", "MomentumOptimizer", "AdamOptimizer",
           "create_global_step", "get_global_step", "get_or_create_global_step"]

GLOBAL_STEP = "global_step"

GradsAndVars = List[Tuple[Optional[Tensor], Variable]]


# ---- global step -----------------------------------------------------------------
def get_global_step(graph: Optional[Graph] = None) -> Optional[Variable]:
    """The graph's global step variable, or None if it has none."""
    found = (graph if graph is not None else get_default_graph()).get_collection(GLOBAL_STEP)
    return found[0] if found else None


def create_global_step(graph: Optional[Graph] = None) -> Variable:
    """Create the graph's global step: an int64 non-trainable Variable named
    ``global_step``, initialized to 0. Raises if it already exists."""
    graph = graph if graph is not None else get_default_graph()
    if get_global_step(graph) is not None:
        raise InvalidArgumentError("the graph already has a global step variable (use get_or_create_global_step)")
    # Root scope: the step's name must not depend on where it is first asked for.
    with graph.as_default(), graph.name_scope(None):
        step = Variable(np.zeros((), dtype=np.int64), name="global_step", trainable=False)
    graph.add_to_collection(GLOBAL_STEP, step)
    return step


def get_or_create_global_step(graph: Optional[Graph] = None) -> Variable:
    """The graph's global step variable, created on first use."""
    step = get_global_step(graph)
    return step if step is not None else create_global_step(graph)


# ---- helpers ---------------------------------------------------------------------
def _is_variable(v: Any) -> bool:
    return isinstance(v, Variable)


def _var_name(var: Variable) -> str:
    return var.op.name


def _hyper(value: Any, dtype: np.dtype, name: str) -> Tensor:
    """A hyperparameter (Python number or Tensor, e.g. a placeholder) as a
    tensor of the variable's dtype."""
    if is_tensor_like(value):
        t = ops.convert_to_tensor(value)
        return t if t.dtype == dtype else ops.cast(t, dtype, name=name)
    return ops.constant(value, dtype=dtype, name=name)


class Optimizer:
    """Base class. Subclasses define ``_create_slots(var_list)`` and
    ``_apply_dense(grad, var)`` (returning the update Tensor/op), and may
    define ``_finish(update_ops, var_list)`` for per-step state."""

    def __init__(self, name: str) -> None:
        self._name = name
        # slot name -> {variable: slot variable}
        self._slots: Dict[str, Dict[Variable, Variable]] = {}
        # (key, graph, dtype) -> variable, for state shared by all variables
        self._non_slots: Dict[Tuple[str, Graph, np.dtype], Variable] = {}

    def get_name(self) -> str:
        return self._name

    # ---- gradients ------------------------------------------------------------------
    def compute_gradients(self, loss: Any, var_list: Optional[Sequence[Variable]] = None,
                          grad_loss: Any = None) -> GradsAndVars:
        """``[(gradient, variable), ...]`` of ``loss`` for ``var_list``
        (default: the trainable variables of the loss's graph). A variable the
        loss does not depend on differentiably gets ``None``."""
        loss = ops.convert_to_tensor(loss)
        if var_list is None:
            var_list = ops.trainable_variables(loss.graph)
        var_list = list(var_list)
        for v in var_list:
            if not _is_variable(v):
                raise InvalidArgumentError(f"var_list must hold gc.Variable objects, got {type(v).__name__} {v!r}")
        if not var_list:
            raise InvalidArgumentError(f"no variables to optimize: the graph of {loss.name} has no trainable "
                                       "variables and no var_list was given")
        if loss.dtype.kind != "f":
            raise GradientError(f"cannot differentiate the loss {loss.name}: its dtype {loss.dtype.name} is not "
                                "floating point")
        grads = gradients(loss, var_list, grad_ys=grad_loss)
        return list(zip(grads, var_list))

    def minimize(self, loss: Any, global_step: Optional[Variable] = None,
                 var_list: Optional[Sequence[Variable]] = None, name: Optional[str] = None,
                 grad_loss: Any = None) -> Operation:
        """One op that takes a step of this optimizer on ``loss``.

        Raises GradientError naming the variables when none of them has a
        gradient; warns naming the ones without a gradient (they are left
        unchanged)."""
        grads_and_vars = self.compute_gradients(loss, var_list=var_list, grad_loss=grad_loss)
        missing = [_var_name(v) for g, v in grads_and_vars if g is None]
        if len(missing) == len(grads_and_vars):
            raise GradientError(
                f"no gradients for any variable: {', '.join(missing)} (loss {ops.convert_to_tensor(loss).name}). "
                "Check that the loss depends on them through differentiable ops (not argmax, casts to int, "
                "or stop_gradient)")
        if missing:
            warnings.warn(f"{self._name}: no gradient for variable(s) {', '.join(missing)}: the loss does not "
                          "depend on them differentiably; they are not updated", stacklevel=2)
        return self.apply_gradients(grads_and_vars, global_step=global_step, name=name)

    # ---- updates ----------------------------------------------------------------------
    def apply_gradients(self, grads_and_vars: Sequence[Tuple[Optional[Any], Variable]],
                        global_step: Optional[Variable] = None, name: Optional[str] = None) -> Operation:
        """One op applying the gradients to their variables (pairs with a
        ``None`` gradient are skipped) and, when given, incrementing
        ``global_step`` after all updates."""
        pairs = list(grads_and_vars)
        for pair in pairs:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and _is_variable(pair[1])):
                raise InvalidArgumentError(f"grads_and_vars must hold (gradient, gc.Variable) pairs, got {pair!r}")
        active = [(g, v) for g, v in pairs if g is not None]
        if not active:
            names = ", ".join(_var_name(v) for _, v in pairs) or "(none given)"
            raise GradientError(f"no gradients provided for any variable: {names}")
        seen: List[Variable] = []
        for _, v in active:
            if any(v is s for s in seen):
                raise InvalidArgumentError(f"variable {_var_name(v)} appears twice in grads_and_vars")
            seen.append(v)
        graph = active[0][1].graph
        with graph.as_default():
            converted = []
            for g, v in active:
                g = ops.convert_to_tensor(g)
                converted.append((g if g.dtype == v.dtype else ops.cast(g, v.dtype), v))
            self._create_slots(seen)
            with graph.name_scope(name or self._name) as scope:
                updates = []
                for g, v in converted:
                    with graph.name_scope("update_" + _var_name(v).replace("/", "_")):
                        updates.append(self._apply_dense(g, v))
                done = self._finish(updates, seen)
                if global_step is not None:
                    with graph.control_dependencies([done]):
                        done = global_step.assign_add(1, name="increment_global_step")
                # The train op takes the scope's own name ("Adam", "GradientDescent"), as in TF1.
                with graph.control_dependencies([done]):
                    return graph.create_op("no_op", [], name=scope[:-1], exact_name=True)

    def _finish(self, update_ops: List[Any], var_list: List[Variable]) -> Operation:
        return ops.group(*update_ops, name="update")

    # ---- slots ---------------------------------------------------------------------
    def get_slot_names(self) -> List[str]:
        """Names of the slots this optimizer creates (e.g. ``["m", "v"]``)."""
        return sorted(self._slots)

    def get_slot(self, var: Variable, name: str) -> Optional[Variable]:
        """The slot variable ``name`` of ``var``, or None if it has none."""
        return self._slots.get(name, {}).get(var)

    def _zeros_slot(self, var: Variable, slot_name: str, op_suffix: str) -> Variable:
        table = self._slots.setdefault(slot_name, {})
        if var not in table:
            # Slots sit next to their variable, outside any caller scope.
            with var.graph.as_default(), var.graph.name_scope(None):
                table[var] = Variable(np.zeros(var.shape, dtype=var.dtype),
                                      name=f"{_var_name(var)}/{op_suffix}", trainable=False)
        return table[var]

    def _non_slot(self, key: str, initial: Any, dtype: Any, graph: Graph) -> Variable:
        """A per-optimizer (not per-variable) state variable, one per graph and dtype."""
        k = (key, graph, np.dtype(dtype))
        if k not in self._non_slots:
            with graph.as_default(), graph.name_scope(None):
                init = _hyper(initial, np.dtype(dtype), "initial") if is_tensor_like(initial) \
                    else np.asarray(initial, dtype=dtype)
                self._non_slots[k] = Variable(init, name=f"{self._name}/{key}", trainable=False)
        return self._non_slots[k]

    def _create_slots(self, var_list: List[Variable]) -> None:
        pass

    def _apply_dense(self, grad: Tensor, var: Variable) -> Any:
        raise InvalidArgumentError(f"{type(self).__name__} does not define how to apply gradients")


class GradientDescentOptimizer(Optimizer):
    """``var -= learning_rate * grad``."""

    def __init__(self, learning_rate: Any, name: str = "GradientDescent") -> None:
        super().__init__(name)
        self._learning_rate = learning_rate

    def _apply_dense(self, grad: Tensor, var: Variable) -> Tensor:
        lr = _hyper(self._learning_rate, var.dtype, "learning_rate")
        return var.assign_sub(ops.multiply(lr, grad), name="update")


class MomentumOptimizer(Optimizer):
    """``accum = momentum * accum + grad; var -= learning_rate * accum``.

    With ``use_nesterov=True``: ``var -= learning_rate * (grad + momentum * accum)``
    using the new accum (TF1's formulation). Slot: ``"momentum"``."""

    def __init__(self, learning_rate: Any, momentum: Any, use_nesterov: bool = False,
                 name: str = "Momentum") -> None:
        super().__init__(name)
        self._learning_rate = learning_rate
        self._momentum = momentum
        self._use_nesterov = bool(use_nesterov)

    def _create_slots(self, var_list: List[Variable]) -> None:
        for v in var_list:
            self._zeros_slot(v, "momentum", self._name)

    def _apply_dense(self, grad: Tensor, var: Variable) -> Tensor:
        lr = _hyper(self._learning_rate, var.dtype, "learning_rate")
        mu = _hyper(self._momentum, var.dtype, "momentum")
        accum = self.get_slot(var, "momentum")
        new_accum = accum.assign(ops.add(ops.multiply(mu, accum), grad))
        step = ops.add(grad, ops.multiply(mu, new_accum)) if self._use_nesterov else new_accum
        return var.assign_sub(ops.multiply(lr, step), name="update")


class AdamOptimizer(Optimizer):
    """Adam (Kingma & Ba), in TF1's formulation::

        lr_t = learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t)
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad^2
        var -= lr_t * m / (sqrt(v) + epsilon)

    ``beta1^t`` and ``beta2^t`` are non-trainable variables (``Adam/beta1_power``,
    ``Adam/beta2_power``) multiplied by the betas after each step. Slots:
    ``"m"`` (``<var>/Adam``) and ``"v"`` (``<var>/Adam_1``)."""

    def __init__(self, learning_rate: Any = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8, name: str = "Adam") -> None:
        super().__init__(name)
        self._learning_rate = learning_rate
        self._beta1 = beta1
        self._beta2 = beta2
        self._epsilon = epsilon

    def _create_slots(self, var_list: List[Variable]) -> None:
        for v in var_list:
            self._zeros_slot(v, "m", self._name)
            self._zeros_slot(v, "v", self._name + "_1")
            self._beta_powers(v)

    def _beta_powers(self, var: Variable) -> Tuple[Variable, Variable]:
        return self._get_beta_accumulators(var.dtype, var.graph)

    def _get_beta_accumulators(self, dtype: Any = np.float32, graph: Optional[Graph] = None) -> Tuple[Variable, Variable]:
        """The (beta1_power, beta2_power) variables for ``dtype`` in ``graph``."""
        graph = graph if graph is not None else get_default_graph()
        return (self._non_slot("beta1_power", self._beta1, dtype, graph),
                self._non_slot("beta2_power", self._beta2, dtype, graph))

    def _apply_dense(self, grad: Tensor, var: Variable) -> Tensor:
        dtype = var.dtype
        beta1_power, beta2_power = self._beta_powers(var)
        lr = _hyper(self._learning_rate, dtype, "learning_rate")
        b1 = _hyper(self._beta1, dtype, "beta1")
        b2 = _hyper(self._beta2, dtype, "beta2")
        eps = _hyper(self._epsilon, dtype, "epsilon")
        lr_t = ops.divide(ops.multiply(lr, ops.sqrt(ops.subtract(1.0, beta2_power))),
                          ops.subtract(1.0, beta1_power), name="lr_t")
        m, v = self.get_slot(var, "m"), self.get_slot(var, "v")
        m_t = m.assign(ops.add(ops.multiply(b1, m), ops.multiply(ops.subtract(1.0, b1), grad)))
        v_t = v.assign(ops.add(ops.multiply(b2, v), ops.multiply(ops.subtract(1.0, b2), ops.square(grad))))
        step = ops.divide(ops.multiply(lr_t, m_t), ops.add(ops.sqrt(v_t), eps))
        return var.assign_sub(step, name="update")

    def _finish(self, update_ops: List[Any], var_list: List[Variable]) -> Operation:
        powers: List[Tuple[Variable, Any]] = []
        for var in var_list:
            for p, beta in zip(self._beta_powers(var), (self._beta1, self._beta2)):
                if all(p is not q for q, _ in powers):
                    powers.append((p, beta))
        graph = var_list[0].graph
        with graph.control_dependencies(update_ops):
            # Under the control dependency each power reads its current value,
            # which no update of this step has changed.
            advanced = [p.assign(ops.multiply(p, _hyper(beta, p.dtype, "beta")),
                                 name="update_" + p.op.name.rsplit("/", 1)[-1])
                        for p, beta in powers]
        return ops.group(*update_ops, *advanced, name="update")
