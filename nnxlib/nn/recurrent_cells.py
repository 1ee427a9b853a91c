"""Recurrent cells: one time step of an RNN, ``(carry, x_t) -> (new_carry, y_t)``.

A cell holds the weights of one step; :class:`~nnxlib.RNN` (in
:mod:`nnxlib.nn.recurrent`) loops it over a sequence. Parameter names, creation order and
initializers are those of ``flax.nnx`` 0.12, so ``Rngs(0)`` gives the same parameters.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> cell = nnx.GRUCell(3, 5, rngs=nnx.Rngs(0))
>>> h = cell.initialize_carry((2, 3), nnx.Rngs(0))
>>> h, y = cell(h, jnp.ones((2, 3)))
>>> y.shape
(2, 5)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from nnxlib.errors import MissingRngStreamError, ShapeMismatchError, format_path
from nnxlib.module import Module
from nnxlib.nn import dtypes, initializers
from nnxlib.nn.activations import sigmoid, tanh
from nnxlib.nn.linear import Linear
from nnxlib.rngs import Rngs, RngStream

__all__ = [
    "RNNCellBase",
    "LSTMCell",
    "OptimizedLSTMCell",
    "SimpleCell",
    "GRUCell",
    "modified_orthogonal",
]

Carry = Any
_NO_METADATA: Mapping[str, Any] = MappingProxyType({})
default_kernel_init = initializers.lecun_normal()
default_bias_init = initializers.zeros_init()
_orthogonal = initializers.orthogonal()


def modified_orthogonal(key: jax.Array, shape: tuple[int, ...],
                        dtype: DTypeLike = jnp.float32) -> jax.Array:
    """Orthogonal initializer that draws in float32 and only then casts to ``dtype``.

    Drawing a QR decomposition directly in half precision is inaccurate; this is the
    default recurrent-kernel initializer of :class:`LSTMCell`, as in flax.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = modified_orthogonal(jax.random.key(0), (3, 3), jnp.bfloat16)
        >>> w.dtype, bool(jnp.allclose(w.astype(jnp.float32) @ w.T.astype(jnp.float32),
        ...                            jnp.eye(3), atol=2e-2))
        (dtype(bfloat16), True)
    """
    return _orthogonal(key, shape, jnp.float32).astype(dtype)


def _carry_stream(owner: Any, rngs: Rngs | RngStream | None, where: str) -> RngStream:
    """The stream carry initializers draw from: the argument, else the owner's own one."""
    if rngs is None:
        rngs = owner.rngs
    if isinstance(rngs, Rngs):
        rngs = rngs.carry
    if rngs is None:
        raise MissingRngStreamError(
            f"{where}: no RNG stream to initialize the carry with (none passed, and the "
            "layer keeps none). Hint: pass one, e.g. initialize_carry(shape, nnx.Rngs(0)), "
            "or build the RNN with rngs=True (its default)."
        )
    return rngs


class RNNCellBase(Module):
    """Base class of recurrent cells: one step ``(carry, x_t) -> (new_carry, y_t)``.

    A subclass implements :meth:`__call__`, :meth:`initialize_carry` and
    :attr:`num_feature_axes` (how many trailing axes of ``x_t`` are features; all axes
    before them are batch axes). :class:`~nnxlib.RNN` works with any such cell.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> class Accumulate(nnx.RNNCellBase):
        ...     def __call__(self, carry, x):
        ...         return carry + x, carry + x
        ...     def initialize_carry(self, input_shape, rngs=None, carry_init=None):
        ...         return jnp.zeros(input_shape)
        ...     @property
        ...     def num_feature_axes(self):
        ...         return 1
        >>> nnx.RNN(Accumulate())(jnp.ones((1, 3, 2)))[0, :, 0]
        Array([1., 2., 3.], dtype=float32)
    """

    def initialize_carry(self, input_shape: tuple[int, ...],
                         rngs: Rngs | RngStream | None = None,
                         carry_init: Callable[..., Any] | None = None) -> Carry:
        """Return the carry before the first step, for one step's input shape.

        Example:
            >>> import nnxlib as nnx
            >>> cell = nnx.SimpleCell(2, 3, rngs=nnx.Rngs(0))
            >>> cell.initialize_carry((4, 2), nnx.Rngs(0)).shape
            (4, 3)
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement initialize_carry. Hint: define it, "
            "or pass initial_carry= to the RNN."
        )

    def __call__(self, carry: Carry, inputs: jax.Array) -> tuple[Carry, jax.Array]:
        """Run one step: return ``(new_carry, output)``; leading input axes are batch axes.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> cell = nnx.SimpleCell(2, 3, rngs=nnx.Rngs(0))
            >>> carry, y = cell(jnp.zeros(3), jnp.ones(2))
            >>> bool((carry == y).all())
            True
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__.")

    @property
    def num_feature_axes(self) -> int:
        """How many trailing axes of a step's input are features (1 for vector inputs).

        Example:
            >>> import nnxlib as nnx
            >>> nnx.LSTMCell(2, 3, rngs=nnx.Rngs(0)).num_feature_axes
            1
        """
        raise NotImplementedError(f"{type(self).__name__} does not define num_feature_axes.")

    # --- checks shared by the built-in cells (and reused by RNN with a longer path) ---

    def _carry_shapes(self, batch_dims: tuple[int, ...]) -> Any:
        """The carry's structure with shapes as leaves, or None when unknown."""
        return None

    def _input_kernel(self) -> tuple[tuple, Any] | None:
        """``(path, kernel)`` of the weight that reads the input, or None when unknown."""
        return None

    def _check_step_inputs(self, input_shape: tuple[int, ...], root: str,
                           shown_shape: tuple[int, ...] | None = None) -> None:
        found = self._input_kernel()
        if found is None:
            return
        path, kernel = found
        expected = kernel.shape[0]
        got = input_shape[-1] if input_shape else None
        if got != expected:
            shown = input_shape if shown_shape is None else shown_shape
            raise ShapeMismatchError(
                f"{format_path(path, root=root)} has shape {tuple(kernel.shape)}, so the "
                f"inputs must have {expected} features on their last axis; got inputs of "
                f"shape {tuple(shown)}. Hint: build the cell with in_features={got}, or "
                "check the previous layer's output size."
            )

    def _check_carry(self, carry: Carry, batch_dims: tuple[int, ...] | None, root: str,
                     name: str) -> None:
        """Check ``carry`` against the cell's carry for ``batch_dims``.

        With ``batch_dims=None`` (a direct cell call, where a carry may broadcast against
        the inputs) only the structure and the feature axis are checked.
        """
        expected = self._carry_shapes(() if batch_dims is None else batch_dims)
        if expected is None:
            return
        exp_leaves, exp_tree = jax.tree_util.tree_flatten(expected, is_leaf=_is_shape)
        flat, got_tree = jax.tree_util.tree_flatten_with_path(carry)
        hint = (f"Hint: build it with {root}.initialize_carry(input_shape) (input_shape: one "
                "time step's input: batch axes, then features), or leave it out to get the "
                "default carry.")
        if exp_tree != got_tree:
            raise ShapeMismatchError(
                f"{root} ({type(self).__name__}): {name} should be structured like "
                f"{expected} (one array per shape), got {got_tree}. {hint}"
            )
        for (path, leaf), want in zip(flat, exp_leaves):
            got = tuple(jnp.shape(leaf))
            if batch_dims is None:
                got, want = got[-1:], want[-1:]
            if got != tuple(want):
                raise ShapeMismatchError(
                    f"{root} ({type(self).__name__}): {name}{jax.tree_util.keystr(path)} "
                    f"should have shape {tuple(want)} (batch axes, then hidden_features="
                    f"{want[-1]}), got {tuple(jnp.shape(leaf))}. {hint}"
                )

    def _check_call(self, carry: Carry, inputs: jax.Array) -> None:
        root = type(self).__name__
        self._check_step_inputs(tuple(jnp.shape(inputs)), root)
        self._check_carry(carry, None, root, "carry")


def _is_shape(x: Any) -> bool:
    return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


class _GatedCell(RNNCellBase):
    """Configuration and carry creation shared by the built-in cells (private)."""

    _carry_parts = 1  # arrays in the carry: 2 for LSTMs (c, h), 1 otherwise

    def _setup(self, in_features: int, hidden_features: int, *, dtype: Any,
               param_dtype: Any, promote_dtype: Callable[..., Any], carry_init: Any,
               keep_rngs: bool, rngs: Rngs) -> None:
        self.in_features, self.hidden_features = in_features, hidden_features
        self.dtype, self.param_dtype = dtype, param_dtype
        self.promote_dtype = promote_dtype
        self.rngs: RngStream | None = None
        if keep_rngs:
            warnings.warn("keep_rngs is deprecated: pass rngs to initialize_carry or to "
                          "the RNN call instead.", stacklevel=3)
            self.rngs = rngs.carry.fork()
        if carry_init:
            # Kept for flax compatibility; it becomes part of the graph definition.
            warnings.warn("carry_init given to the cell's constructor: prefer passing it to "
                          "initialize_carry, so that two cells differing only in it share "
                          "one graph definition.", stacklevel=3)
        self.carry_init = carry_init

    def _linear(self, n_in: int, n_out: int, *, use_bias: bool, kernel_init: Any,
                bias_init: Any, rngs: Rngs, kernel_metadata: Mapping[str, Any],
                bias_metadata: Mapping[str, Any]) -> Linear:
        return Linear(n_in, n_out, use_bias=use_bias, kernel_init=kernel_init,
                      bias_init=bias_init, dtype=self.dtype, param_dtype=self.param_dtype,
                      promote_dtype=self.promote_dtype, rngs=rngs,
                      kernel_metadata=kernel_metadata, bias_metadata=bias_metadata)

    def _dense_pair(self, width: int, *, input_bias: bool, hidden_first: bool = False,
                    kernel_init: Any, recurrent_kernel_init: Any, bias_init: Any,
                    rngs: Rngs, kernel_metadata: Mapping[str, Any],
                    recurrent_kernel_metadata: Mapping[str, Any],
                    bias_metadata: Mapping[str, Any]) -> None:
        """``dense_i`` (input -> ``width``) and ``dense_h`` (hidden -> ``width``), the bias
        on one of them; created in flax's order (``hidden_first``), which fixes the keys
        each weight gets."""
        def input_layer() -> Linear:
            return self._linear(self.in_features, width, use_bias=input_bias,
                                kernel_init=kernel_init, bias_init=bias_init, rngs=rngs,
                                kernel_metadata=kernel_metadata,
                                bias_metadata=bias_metadata if input_bias else _NO_METADATA)

        def hidden_layer() -> Linear:
            return self._linear(self.hidden_features, width, use_bias=not input_bias,
                                kernel_init=recurrent_kernel_init, bias_init=bias_init,
                                rngs=rngs, kernel_metadata=recurrent_kernel_metadata,
                                bias_metadata=_NO_METADATA if input_bias else bias_metadata)

        if hidden_first:
            self.dense_h = hidden_layer()
            self.dense_i = input_layer()
        else:
            self.dense_i = input_layer()
            self.dense_h = hidden_layer()

    def _input_kernel(self) -> tuple[tuple, Any]:
        return ("dense_i", "kernel"), self.dense_i.kernel

    def initialize_carry(self, input_shape: tuple[int, ...],
                         rngs: Rngs | RngStream | None = None,
                         carry_init: Callable[..., Any] | None = None) -> Carry:
        """The first carry for one step's ``input_shape`` (batch axes, then features).

        Each carry array has shape ``batch axes + (hidden_features,)`` and
        ``param_dtype``, made by ``carry_init`` (else the one given to the constructor,
        else zeros) from keys of the ``carry`` stream of ``rngs`` (else the cell's own
        stream, kept with ``keep_rngs=True``).

        Example:
            >>> import nnxlib as nnx
            >>> cell = nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0))
            >>> c, h = cell.initialize_carry((2, 3), nnx.Rngs(0))
            >>> c.shape, h.shape
            ((2, 4), (2, 4))
        """
        stream = _carry_stream(self, rngs, f"{type(self).__name__}.initialize_carry")
        init = carry_init or self.carry_init or initializers.zeros_init()
        shape = tuple(input_shape[:-1]) + (self.hidden_features,)
        parts = tuple(init(stream(), shape, self.param_dtype) for _ in range(self._carry_parts))
        return parts if self._carry_parts > 1 else parts[0]

    def _carry_shapes(self, batch_dims: tuple[int, ...]) -> Any:
        shape = tuple(batch_dims) + (self.hidden_features,)
        return (shape,) * self._carry_parts if self._carry_parts > 1 else shape

    @property
    def num_feature_axes(self) -> int:
        """Built-in cells read vectors: one feature axis.

        Example:
            >>> import nnxlib as nnx
            >>> nnx.GRUCell(2, 3, rngs=nnx.Rngs(0)).num_feature_axes
            1
        """
        return 1


class LSTMCell(_GatedCell):
    r"""Long short-term memory cell with one weight matrix per gate.

    With input ``x``, previous output ``h`` and memory ``c``::

        i = gate_fn(ii(x) + hi(h))          f = gate_fn(if_(x) + hf(h))
        g = activation_fn(ig(x) + hg(h))    o = gate_fn(io(x) + ho(h))
        c' = f * c + i * g                  h' = o * activation_fn(c')

    ``ii, if_, ig, io`` are :class:`~nnxlib.Linear` layers without bias (``in_features ->
    hidden_features``, ``kernel_init``); ``hi, hf, hg, ho`` have a bias (``hidden_features
    -> hidden_features``, ``recurrent_kernel_init``, ``bias_init``), created in that
    order. The carry is ``(c, h)``; the output is ``h'``.

    Args:
        in_features: size of the input's last axis.
        hidden_features: size of ``c`` and ``h``.
        gate_fn: gate activation (sigmoid).
        activation_fn: candidate and output activation (tanh).
        kernel_init, recurrent_kernel_init, bias_init: initializers.
        dtype, param_dtype, promote_dtype: as for :class:`~nnxlib.Linear`.
        carry_init: default carry initializer (prefer the argument of
            :meth:`initialize_carry`).
        keep_rngs: deprecated: keep a fork of ``rngs.carry`` for carry initialization.
        rngs: random streams; ``params`` keys are drawn for the weights.
        kernel_metadata, recurrent_kernel_metadata, bias_metadata: variable metadata.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> cell = nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0))
        >>> carry = cell.initialize_carry((2, 3), nnx.Rngs(0))
        >>> (c, h), y = cell(carry, jnp.ones((2, 3)))
        >>> c.shape, bool((h == y).all())
        ((2, 4), True)
    """

    _carry_parts = 2

    def __init__(self, in_features: int, hidden_features: int, *,
                 gate_fn: Callable[..., Any] = sigmoid,
                 activation_fn: Callable[..., Any] = tanh,
                 kernel_init: Callable[..., Any] = default_kernel_init,
                 recurrent_kernel_init: Callable[..., Any] = modified_orthogonal,
                 bias_init: Callable[..., Any] = default_bias_init,
                 dtype: DTypeLike | None = None, param_dtype: DTypeLike = jnp.float32,
                 carry_init: Callable[..., Any] | None = None,
                 promote_dtype: Callable[..., Any] = dtypes.promote_dtype,
                 keep_rngs: bool = False, rngs: Rngs,
                 kernel_metadata: Mapping[str, Any] = _NO_METADATA,
                 recurrent_kernel_metadata: Mapping[str, Any] = _NO_METADATA,
                 bias_metadata: Mapping[str, Any] = _NO_METADATA):
        self._setup(in_features, hidden_features, dtype=dtype, param_dtype=param_dtype,
                    promote_dtype=promote_dtype, carry_init=carry_init, keep_rngs=keep_rngs,
                    rngs=rngs)
        self.gate_fn, self.activation_fn = gate_fn, activation_fn

        def from_input() -> Linear:
            return self._linear(in_features, hidden_features, use_bias=False,
                                kernel_init=kernel_init, bias_init=bias_init, rngs=rngs,
                                kernel_metadata=kernel_metadata, bias_metadata=_NO_METADATA)

        def from_hidden() -> Linear:
            return self._linear(hidden_features, hidden_features, use_bias=True,
                                kernel_init=recurrent_kernel_init, bias_init=bias_init,
                                rngs=rngs, kernel_metadata=recurrent_kernel_metadata,
                                bias_metadata=bias_metadata)

        # The order of creation fixes which params keys each weight gets (flax's order).
        self.ii, self.if_, self.ig, self.io = (from_input() for _ in range(4))
        self.hi, self.hf, self.hg, self.ho = (from_hidden() for _ in range(4))

    def _input_kernel(self) -> tuple[tuple, Any]:
        return ("ii", "kernel"), self.ii.kernel

    def __call__(self, carry: tuple[jax.Array, jax.Array],
                 inputs: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        """One LSTM step: ``((c, h), x) -> ((c', h'), h')``.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> cell = nnx.LSTMCell(2, 3, rngs=nnx.Rngs(0))
            >>> (c, h), y = cell((jnp.zeros(3), jnp.zeros(3)), jnp.ones(2))
            >>> y.shape
            (3,)
        """
        self._check_call(carry, inputs)
        c, h = carry
        gate, act = self.gate_fn, self.activation_fn
        i = gate(self.ii(inputs) + self.hi(h))
        f = gate(self.if_(inputs) + self.hf(h))
        g = act(self.ig(inputs) + self.hg(h))
        o = gate(self.io(inputs) + self.ho(h))
        new_c = f * c + i * g
        new_h = o * act(new_c)
        return (new_c, new_h), new_h


class OptimizedLSTMCell(_GatedCell):
    """An :class:`LSTMCell` whose four gates share two wide matrix products.

    ``dense_i`` (``in_features -> 4 * hidden_features``, no bias) and ``dense_h``
    (``hidden_features -> 4 * hidden_features``, with bias) hold the gates side by side in
    the order input, forget, candidate, output: column block ``k`` of ``dense_i.kernel``
    plays the role of ``LSTMCell``'s ``ii``, ``if_``, ``ig``, ``io`` for ``k = 0..3``.
    Two large products are usually faster than eight small ones. Arguments as for
    :class:`LSTMCell`, except that ``recurrent_kernel_init`` defaults to
    ``initializers.orthogonal()`` (flax's default).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> cell = nnx.OptimizedLSTMCell(3, 4, rngs=nnx.Rngs(0))
        >>> cell.dense_i.kernel.shape, cell.dense_h.kernel.shape
        ((3, 16), (4, 16))
        >>> _, y = cell(cell.initialize_carry((3,), nnx.Rngs(0)), jnp.ones(3))
        >>> y.shape
        (4,)
    """

    _carry_parts = 2

    def __init__(self, in_features: int, hidden_features: int, *,
                 gate_fn: Callable[..., Any] = sigmoid,
                 activation_fn: Callable[..., Any] = tanh,
                 kernel_init: Callable[..., Any] = default_kernel_init,
                 recurrent_kernel_init: Callable[..., Any] = _orthogonal,
                 bias_init: Callable[..., Any] = default_bias_init,
                 dtype: DTypeLike | None = None, param_dtype: DTypeLike = jnp.float32,
                 carry_init: Callable[..., Any] | None = None,
                 promote_dtype: Callable[..., Any] = dtypes.promote_dtype,
                 keep_rngs: bool = False, rngs: Rngs,
                 kernel_metadata: Mapping[str, Any] = _NO_METADATA,
                 recurrent_kernel_metadata: Mapping[str, Any] = _NO_METADATA,
                 bias_metadata: Mapping[str, Any] = _NO_METADATA):
        self._setup(in_features, hidden_features, dtype=dtype, param_dtype=param_dtype,
                    promote_dtype=promote_dtype, carry_init=carry_init, keep_rngs=keep_rngs,
                    rngs=rngs)
        self.gate_fn, self.activation_fn = gate_fn, activation_fn
        self._dense_pair(4 * hidden_features, input_bias=False, kernel_init=kernel_init,
                         recurrent_kernel_init=recurrent_kernel_init, bias_init=bias_init,
                         rngs=rngs, kernel_metadata=kernel_metadata,
                         recurrent_kernel_metadata=recurrent_kernel_metadata,
                         bias_metadata=bias_metadata)

    def __call__(self, carry: tuple[jax.Array, jax.Array],
                 inputs: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        """One LSTM step: ``((c, h), x) -> ((c', h'), h')``.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> cell = nnx.OptimizedLSTMCell(2, 3, rngs=nnx.Rngs(0))
            >>> (c, h), y = cell((jnp.zeros((5, 3)), jnp.zeros((5, 3))), jnp.ones((5, 2)))
            >>> c.shape
            (5, 3)
        """
        self._check_call(carry, inputs)
        c, h = carry
        pre_i, pre_f, pre_g, pre_o = jnp.split(self.dense_i(inputs) + self.dense_h(h), 4,
                                               axis=-1)
        gate, act = self.gate_fn, self.activation_fn
        new_c = gate(pre_f) * c + gate(pre_i) * act(pre_g)
        new_h = gate(pre_o) * act(new_c)
        return (new_c, new_h), new_h


class SimpleCell(_GatedCell):
    """Elman cell: ``h' = activation_fn(dense_i(x) + dense_h(h))`` (``+ h`` if ``residual``).

    ``dense_h`` (``hidden_features -> hidden_features``, no bias,
    ``recurrent_kernel_init``) is created before ``dense_i`` (``in_features ->
    hidden_features``, with bias), as in flax. The carry is ``h``, also the output.
    Note ``dtype`` defaults to ``float32`` here (flax's default for this cell).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> cell = nnx.SimpleCell(3, 2, residual=True, rngs=nnx.Rngs(0))
        >>> h, y = cell(jnp.zeros(2), jnp.ones(3))
        >>> y.shape
        (2,)
    """

    def __init__(self, in_features: int, hidden_features: int, *,
                 dtype: DTypeLike = jnp.float32, param_dtype: DTypeLike = jnp.float32,
                 carry_init: Callable[..., Any] | None = None, residual: bool = False,
                 activation_fn: Callable[..., Any] = tanh,
                 kernel_init: Callable[..., Any] = default_kernel_init,
                 recurrent_kernel_init: Callable[..., Any] = _orthogonal,
                 bias_init: Callable[..., Any] = default_bias_init,
                 promote_dtype: Callable[..., Any] = dtypes.promote_dtype,
                 keep_rngs: bool = False, rngs: Rngs,
                 kernel_metadata: Mapping[str, Any] = _NO_METADATA,
                 recurrent_kernel_metadata: Mapping[str, Any] = _NO_METADATA,
                 bias_metadata: Mapping[str, Any] = _NO_METADATA):
        self._setup(in_features, hidden_features, dtype=dtype, param_dtype=param_dtype,
                    promote_dtype=promote_dtype, carry_init=carry_init, keep_rngs=keep_rngs,
                    rngs=rngs)
        self.residual, self.activation_fn = residual, activation_fn
        self._dense_pair(hidden_features, input_bias=True, hidden_first=True,
                         kernel_init=kernel_init, recurrent_kernel_init=recurrent_kernel_init,
                         bias_init=bias_init, rngs=rngs, kernel_metadata=kernel_metadata,
                         recurrent_kernel_metadata=recurrent_kernel_metadata,
                         bias_metadata=bias_metadata)

    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One step: ``(h, x) -> (h', h')``.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> cell = nnx.SimpleCell(1, 1, kernel_init=nnx.initializers.zeros,
            ...                       recurrent_kernel_init=nnx.initializers.zeros,
            ...                       residual=True, rngs=nnx.Rngs(0))
            >>> cell(jnp.array([0.5]), jnp.array([1.0]))[1]     # tanh(0 + 0 + 0.5)
            Array([0.46211717], dtype=float32)
        """
        self._check_call(carry, inputs)
        pre = self.dense_i(inputs) + self.dense_h(carry)
        if self.residual:
            pre = pre + carry
        new_h = self.activation_fn(pre)
        return new_h, new_h


class GRUCell(_GatedCell):
    """Gated recurrent unit with the reset gate applied after the recurrent product.

    ``dense_i`` (``in_features -> 3 * hidden_features``, with bias) is created before
    ``dense_h`` (``hidden_features -> 3 * hidden_features``, no bias); their column blocks
    are reset ``r``, update ``z`` and candidate ``n``::

        r = gate_fn(x_r + h_r)     z = gate_fn(x_z + h_z)
        n = activation_fn(x_n + r * h_n)      h' = (1 - z) * n + z * h

    The carry is ``h``, also the output. Arguments as for :class:`LSTMCell` (with
    ``recurrent_kernel_init`` defaulting to ``initializers.orthogonal()``).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> cell = nnx.GRUCell(3, 4, rngs=nnx.Rngs(0))
        >>> cell.dense_i.kernel.shape, cell.dense_h.bias
        ((3, 12), None)
    """

    def __init__(self, in_features: int, hidden_features: int, *,
                 gate_fn: Callable[..., Any] = sigmoid,
                 activation_fn: Callable[..., Any] = tanh,
                 kernel_init: Callable[..., Any] = default_kernel_init,
                 recurrent_kernel_init: Callable[..., Any] = _orthogonal,
                 bias_init: Callable[..., Any] = default_bias_init,
                 dtype: DTypeLike | None = None, param_dtype: DTypeLike = jnp.float32,
                 carry_init: Callable[..., Any] | None = None,
                 promote_dtype: Callable[..., Any] = dtypes.promote_dtype,
                 keep_rngs: bool = False, rngs: Rngs,
                 kernel_metadata: Mapping[str, Any] = _NO_METADATA,
                 recurrent_kernel_metadata: Mapping[str, Any] = _NO_METADATA,
                 bias_metadata: Mapping[str, Any] = _NO_METADATA):
        self._setup(in_features, hidden_features, dtype=dtype, param_dtype=param_dtype,
                    promote_dtype=promote_dtype, carry_init=carry_init, keep_rngs=keep_rngs,
                    rngs=rngs)
        self.gate_fn, self.activation_fn = gate_fn, activation_fn
        self._dense_pair(3 * hidden_features, input_bias=True, kernel_init=kernel_init,
                         recurrent_kernel_init=recurrent_kernel_init, bias_init=bias_init,
                         rngs=rngs, kernel_metadata=kernel_metadata,
                         recurrent_kernel_metadata=recurrent_kernel_metadata,
                         bias_metadata=bias_metadata)

    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One GRU step: ``(h, x) -> (h', h')``.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> cell = nnx.GRUCell(2, 3, rngs=nnx.Rngs(0))
            >>> h, y = cell(jnp.zeros((4, 3)), jnp.ones((4, 2)))
            >>> h.shape
            (4, 3)
        """
        self._check_call(carry, inputs)
        x_r, x_z, x_n = jnp.split(self.dense_i(inputs), 3, axis=-1)
        h_r, h_z, h_n = jnp.split(self.dense_h(carry), 3, axis=-1)
        r = self.gate_fn(x_r + h_r)
        z = self.gate_fn(x_z + h_z)
        n = self.activation_fn(x_n + r * h_n)
        new_h = (1.0 - z) * n + z * carry
        return new_h, new_h
