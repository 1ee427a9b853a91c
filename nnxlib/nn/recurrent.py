"""Recurrent layers: :class:`RNN` loops a cell over time, :class:`Bidirectional` both ways.

The cells (:class:`LSTMCell`, :class:`OptimizedLSTMCell`, :class:`GRUCell`,
:class:`SimpleCell`, and the base :class:`RNNCellBase`) live in
:mod:`nnxlib.nn.recurrent_cells` and are re-exported here, as ``flax.nnx.nn.recurrent``
holds them all.

>>> import jax.numpy as jnp
>>> import nnxlib as nnx
>>> rnn = nnx.RNN(nnx.LSTMCell(3, 8, rngs=nnx.Rngs(0)))
>>> rnn(jnp.ones((2, 5, 3))).shape          # (batch, time, features)
(2, 5, 8)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp

from nnxlib.errors import ShapeMismatchError
from nnxlib.filters import All
from nnxlib.module import Module
from nnxlib.nn.recurrent_cells import (
    GRUCell,
    LSTMCell,
    OptimizedLSTMCell,
    RNNCellBase,
    SimpleCell,
    modified_orthogonal,
)
from nnxlib.rngs import Rngs, RngState, RngStream, split_rngs
from nnxlib.transforms import Carry, StateAxes, jit, scan

__all__ = [
    "RNNCellBase",
    "LSTMCell",
    "OptimizedLSTMCell",
    "SimpleCell",
    "GRUCell",
    "RNNBase",
    "RNN",
    "Bidirectional",
    "flip_sequences",
    "modified_orthogonal",
]

Output = Any
_log = logging.getLogger(__name__)


def flip_sequences(inputs: jax.Array, seq_lengths: jax.Array | None, num_batch_dims: int,
                   time_major: bool) -> jax.Array:
    """Reverse each sequence along time, keeping padding after the valid steps.

    Without ``seq_lengths`` the whole time axis is reversed. With them, the first
    ``seq_lengths[b]`` steps of sequence ``b`` are reversed in place; the padding steps
    after them stay after them (in reversed order among themselves), so a reversed RNN
    reads each sequence's last valid step first. The time axis is 0 if ``time_major``,
    else ``num_batch_dims``.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1, 2, 3, 0], [4, 5, 0, 0]])
        >>> flip_sequences(x, jnp.array([3, 2]), num_batch_dims=1, time_major=False)
        Array([[3, 2, 1, 0],
               [5, 4, 0, 0]], dtype=int32)
    """
    time_axis = 0 if time_major else num_batch_dims
    steps = inputs.shape[time_axis]
    if seq_lengths is None:
        return jnp.flip(inputs, axis=time_axis)
    # Step t of the result reads step (len - 1 - t) mod T: the valid part reversed, the
    # padding (negative indices, wrapped) after it.
    back = jnp.arange(steps - 1, -1, -1)
    lengths = jnp.expand_dims(jnp.asarray(seq_lengths), time_axis)  # time axis of size 1
    if time_major:
        back = back.reshape((steps,) + (1,) * num_batch_dims)
    else:
        back = back.reshape((1,) * num_batch_dims + (steps,))
    index = (back + lengths) % steps
    index = index.reshape(index.shape + (1,) * (inputs.ndim - index.ndim))
    return jnp.take_along_axis(inputs, index, axis=time_axis)


def _last_valid(stacked: Any, seq_lengths: jax.Array) -> Any:
    """From carries stacked on axis 0 (time), take step ``seq_lengths - 1`` per sequence."""
    last = jnp.asarray(seq_lengths) - 1

    def pick(x: jax.Array) -> jax.Array:
        index = last.reshape((1,) + last.shape + (1,) * (x.ndim - 1 - last.ndim))
        return jnp.take_along_axis(x, index, axis=0)[0]

    return jax.tree_util.tree_map(pick, stacked)


def _own_stream(rngs: Any, where: str, *, accept_stream: bool = True) -> RngStream | None:
    """The carry stream an RNN keeps, from the constructor's ``rngs`` argument."""
    if rngs is True:
        return RngStream(0, tag="carry")
    if rngs is False:
        return None
    if isinstance(rngs, Rngs):
        return rngs.carry.fork()
    if accept_stream and isinstance(rngs, RngStream):
        return rngs
    raise TypeError(
        f"{where}: rngs must be True (a stream seeded with 0), False (none), an nnx.Rngs "
        f"(its carry stream is forked) or an nnx.RngStream; got {type(rngs).__name__}. "
        "Hint: use rngs=nnx.Rngs(seed)."
    )


class RNNBase(Protocol):
    """What :class:`Bidirectional` needs of its forward and backward layers: a callable
    that runs over a sequence with :class:`RNN`'s call options. ``RNN`` satisfies it, and
    so does any object with such a ``__call__`` (no subclassing needed).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> def gru(seed: int) -> nnx.nn.recurrent.RNNBase:
        ...     return nnx.RNN(nnx.GRUCell(2, 3, rngs=nnx.Rngs(seed)))
        >>> nnx.Bidirectional(gru(0), gru(1))(jnp.ones((1, 5, 2))).shape
        (1, 5, 6)
    """

    def __call__(self, inputs: jax.Array, *, initial_carry: Any = None,
                 rngs: Rngs | RngStream | None = None,
                 seq_lengths: jax.Array | None = None, return_carry: bool | None = None,
                 time_major: bool | None = None, reverse: bool | None = None,
                 keep_order: bool | None = None) -> Output | tuple[Any, Output]:
        """Run over the sequence ``inputs``: the outputs, or ``(carry, outputs)`` with
        ``return_carry``."""
        ...


class RNN(Module):
    """Apply a recurrent cell to every step of a sequence, as one compiled loop.

    Inputs are ``(*batch, time, *features)`` (``time_major=False``) or ``(time, *batch,
    *features)``; the number of feature axes is the cell's ``num_feature_axes``. The
    result holds the cell's output for every step, on the same time axis.

    The loop is :func:`~nnxlib.scan` over the time axis; the cell's state is carried
    from step to step (``state_axes``, default ``StateAxes({...: nnx.Carry})``), except
    RNG streams matched by ``broadcast_rngs``, which are split once per call and given
    unchanged to every step.

    Args:
        cell: the :class:`RNNCellBase` applied at each step.
        time_major: whether time is the first axis.
        return_carry: also return the final carry: ``(carry, outputs)``.
        reverse: run from the last step to the first (with ``seq_lengths``: from each
            sequence's last valid step).
        keep_order: with ``reverse``, put the outputs back in input order.
        unroll: steps per loop iteration, passed to ``jax.lax.scan``.
        state_axes: how the cell's state enters the loop, as for :func:`~nnxlib.scan`.
        broadcast_rngs: filter of RNG streams given to every step unchanged.
        rngs: where the initial carry's keys come from: ``True`` a ``carry`` stream
            seeded with 0, an ``nnx.Rngs`` (a fork of its ``carry`` stream), an
            ``nnx.RngStream``, or ``False`` (then pass ``rngs`` or ``initial_carry`` to
            each call).

    Every option except ``unroll`` can be overridden per call.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> rnn = nnx.RNN(nnx.GRUCell(2, 4, rngs=nnx.Rngs(0)), return_carry=True)
        >>> x = jnp.ones((3, 6, 2))
        >>> carry, ys = rnn(x, seq_lengths=jnp.array([6, 4, 1]))
        >>> carry.shape, ys.shape
        ((3, 4), (3, 6, 4))
        >>> bool(jnp.allclose(carry[1], ys[1, 3]))    # the carry after step 4 of 6
        True
    """

    def __init__(self, cell: RNNCellBase, *, time_major: bool = False,
                 return_carry: bool = False, reverse: bool = False, keep_order: bool = False,
                 unroll: int = 1,
                 state_axes: Mapping[Any, int | type[Carry] | None] | None = None,
                 broadcast_rngs: Any = None, rngs: Rngs | RngStream | bool = True):
        self.cell = cell
        self.time_major, self.return_carry = time_major, return_carry
        self.reverse, self.keep_order, self.unroll = reverse, keep_order, unroll
        self.rngs = _own_stream(rngs, "RNN")
        self.state_axes = StateAxes(state_axes or {...: Carry})
        self.broadcast_rngs = broadcast_rngs

    def __call__(self, inputs: jax.Array, *, initial_carry: Any = None,
                 seq_lengths: jax.Array | None = None, return_carry: bool | None = None,
                 time_major: bool | None = None, reverse: bool | None = None,
                 keep_order: bool | None = None,
                 rngs: Rngs | RngStream | None = None) -> Output | tuple[Any, Output]:
        """Run the cell over ``inputs``; options left as None take the layer's values.

        ``seq_lengths`` (one int per sequence, shape = the batch axes) marks how many
        steps of each sequence are valid: it decides which steps a reversed run reads
        first and, with ``return_carry``, which step's carry is returned (outputs past a
        sequence's end are computed but meaningless). ``initial_carry`` replaces
        ``cell.initialize_carry``; ``rngs`` replaces the layer's own carry stream.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> rnn = nnx.RNN(nnx.SimpleCell(1, 1, rngs=nnx.Rngs(0)))
            >>> x = jnp.arange(4.0).reshape(1, 4, 1)
            >>> backwards = rnn(x, reverse=True, keep_order=True)
            >>> backwards.shape
            (1, 4, 1)
        """
        return_carry = self.return_carry if return_carry is None else return_carry
        time_major = self.time_major if time_major is None else time_major
        reverse = self.reverse if reverse is None else reverse
        keep_order = self.keep_order if keep_order is None else keep_order

        time_axis, batch_dims = self._axes(inputs, time_major)
        self._check_inputs(inputs, time_axis, batch_dims, initial_carry, seq_lengths, "RNN")
        flags = dict(return_carry=bool(return_carry), time_major=bool(time_major),
                     reverse=bool(reverse), keep_order=bool(keep_order))
        if isinstance(inputs, jax.core.Tracer):
            return self._loop(inputs, initial_carry, seq_lengths, rngs, **flags)
        # Called eagerly: go through one cached compiled loop. A lax.scan run eagerly is
        # traced and compiled anew on every call (its body is a new function each time).
        return _compiled_loop(self, inputs, initial_carry, seq_lengths, rngs, **flags)

    def _loop(self, inputs: jax.Array, initial_carry: Any, seq_lengths: Any, rngs: Any, *,
              return_carry: bool, time_major: bool, reverse: bool, keep_order: bool) -> Any:
        """The loop itself, on checked inputs and resolved options."""
        time_axis, batch_dims = self._axes(inputs, time_major)
        step_shape = inputs.shape[:time_axis] + inputs.shape[time_axis + 1:]
        if reverse:
            inputs = flip_sequences(inputs, seq_lengths, len(batch_dims), time_major)
        if rngs is None:
            rngs = self.rngs
        elif isinstance(rngs, Rngs):
            rngs = rngs.carry.fork()
        carry = (self.cell.initialize_carry(step_shape, rngs) if initial_carry is None
                 else initial_carry)

        # The carry of every step is only needed to pick each sequence's last valid one.
        keep_carries = seq_lengths is not None and return_carry
        axes = StateAxes({All(RngState, self.broadcast_rngs): None,
                          **dict(zip(self.state_axes.filters, self.state_axes.axes))})

        def step(cell: RNNCellBase, carry: Any, x: jax.Array) -> tuple[Any, Any]:
            carry, y = cell(carry, x)
            return carry, ((carry, y) if keep_carries else y)

        # StateAxes need graph mode with updates, whatever mode the caller has set.
        loop = scan(step, in_axes=(axes, Carry, time_axis),
                    out_axes=(Carry, (0, time_axis) if keep_carries else time_axis),
                    unroll=self.unroll, graph=True, graph_updates=True)
        if self.broadcast_rngs is not None:
            # One fresh key per call for the broadcast streams, the same for every step.
            loop = split_rngs(splits=1, only=self.broadcast_rngs, squeeze=True)(loop)
        carry, outputs = loop(self.cell, carry, inputs)
        if keep_carries:
            carries, outputs = outputs
            carry = _last_valid(carries, seq_lengths)
        if reverse and keep_order:
            outputs = flip_sequences(outputs, seq_lengths, len(batch_dims), time_major)
        return (carry, outputs) if return_carry else outputs

    def _axes(self, inputs: jax.Array, time_major: bool) -> tuple[int, tuple[int, ...]]:
        """The time axis of ``inputs`` and the batch axes' sizes."""
        features = self.cell.num_feature_axes
        ndim = jnp.ndim(inputs)
        if ndim < features + 1:
            raise ShapeMismatchError(
                f"RNN.cell ({type(self.cell).__name__}): inputs need a time axis and "
                f"{features} feature axis(es), got shape {jnp.shape(inputs)}. Hint: add a "
                "time axis, e.g. x[:, None] for a single step."
            )
        if time_major:
            return 0, tuple(inputs.shape[1:ndim - features])
        time_axis = ndim - features - 1
        return time_axis, tuple(inputs.shape[:time_axis])

    def _check_inputs(self, inputs: jax.Array, time_axis: int, batch_dims: tuple[int, ...],
                      initial_carry: Any, seq_lengths: Any, root: str) -> None:
        """Check shapes before anything runs (and before any RNG stream advances)."""
        cell_root = f"{root}.cell"
        step_shape = inputs.shape[:time_axis] + inputs.shape[time_axis + 1:]
        # Any module with __call__, initialize_carry and num_feature_axes is a cell, as in
        # flax.nnx; the shape checks come with RNNCellBase (the built-in cells).
        if isinstance(self.cell, RNNCellBase):
            self.cell._check_step_inputs(step_shape, cell_root, shown_shape=inputs.shape)
            if initial_carry is not None:
                self.cell._check_carry(initial_carry, batch_dims, cell_root, "initial_carry")
        if seq_lengths is not None:
            shape = tuple(jnp.shape(seq_lengths))
            if shape != batch_dims:
                raise ShapeMismatchError(
                    f"{root}: seq_lengths should have one entry per sequence, shape "
                    f"{batch_dims} (the batch axes of inputs {tuple(inputs.shape)}), got "
                    f"shape {shape}. Hint: pass an int array of the valid length of each "
                    "sequence; check time_major if the axes look swapped."
                )
            if not jnp.issubdtype(jnp.result_type(seq_lengths), jnp.integer):
                raise TypeError(
                    f"{root}: seq_lengths must be integers, got dtype "
                    f"{jnp.result_type(seq_lengths)}. Hint: seq_lengths.astype(jnp.int32)."
                )


@functools.partial(jit, static_argnames=("return_carry", "time_major", "reverse",
                                          "keep_order"))
def _compiled_loop(rnn: RNN, inputs: jax.Array, initial_carry: Any, seq_lengths: Any,
                   rngs: Any, **flags: bool) -> Any:
    return rnn._loop(inputs, initial_carry, seq_lengths, rngs, **flags)


def _concatenate(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.concatenate([a, b], axis=-1)


class Bidirectional(Module):
    """Run one RNN forwards and another backwards over the inputs, and merge the outputs.

    The backward RNN is called with ``reverse=True, keep_order=True``, so its output at
    step ``t`` has read steps ``t..end`` (of each sequence's valid part, with
    ``seq_lengths``). ``merge_fn(forward, backward)`` combines the two outputs
    (default: concatenate along the last axis). With ``return_carry`` the carry is
    ``(forward_carry, backward_carry)``; ``initial_carry`` takes the same pair.
    ``rngs`` is as for :class:`RNN`; the stream is given to both RNNs' calls.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> layer = nnx.Bidirectional(nnx.RNN(nnx.GRUCell(3, 4, rngs=nnx.Rngs(0))),
        ...                           nnx.RNN(nnx.GRUCell(3, 4, rngs=nnx.Rngs(1))))
        >>> layer(jnp.ones((2, 5, 3))).shape
        (2, 5, 8)
    """

    def __init__(self, forward_rnn: RNNBase, backward_rnn: RNNBase, *,
                 merge_fn: Callable[[jax.Array, jax.Array], jax.Array] = _concatenate,
                 time_major: bool = False, return_carry: bool = False,
                 rngs: Rngs | RngStream | bool = True):
        self.forward_rnn, self.backward_rnn = forward_rnn, backward_rnn
        self.merge_fn = merge_fn
        self.time_major, self.return_carry = time_major, return_carry
        self.rngs = _own_stream(rngs, "Bidirectional")

    def __call__(self, inputs: jax.Array, *, initial_carry: tuple[Any, Any] | None = None,
                 rngs: Rngs | RngStream | None = None, seq_lengths: jax.Array | None = None,
                 return_carry: bool | None = None, time_major: bool | None = None,
                 reverse: bool | None = None, keep_order: bool | None = None,
                 ) -> Output | tuple[tuple[Any, Any], Output]:
        """Encode both ways; ``reverse`` and ``keep_order`` are accepted and ignored.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> layer = nnx.Bidirectional(nnx.RNN(nnx.LSTMCell(2, 3, rngs=nnx.Rngs(0))),
            ...                           nnx.RNN(nnx.LSTMCell(2, 3, rngs=nnx.Rngs(1))))
            >>> (fwd, bwd), ys = layer(jnp.ones((1, 4, 2)), return_carry=True)
            >>> fwd[1].shape, ys.shape
            ((1, 3), (1, 4, 6))
        """
        time_major = self.time_major if time_major is None else time_major
        return_carry = self.return_carry if return_carry is None else return_carry
        if rngs is None:
            rngs = self.rngs
        if isinstance(rngs, Rngs):
            rngs = rngs.carry
        if initial_carry is None:
            forward_carry = backward_carry = None
        else:
            if not (isinstance(initial_carry, (tuple, list)) and len(initial_carry) == 2):
                raise ShapeMismatchError(
                    "Bidirectional: initial_carry should be a pair (forward carry, backward "
                    f"carry), got {jax.tree_util.tree_structure(initial_carry)}. Hint: "
                    "initial_carry=(forward_rnn_carry, backward_rnn_carry)."
                )
            forward_carry, backward_carry = initial_carry
        # Check both directions first, so a bad input changes no RNG stream.
        for name, rnn, carry in (("forward_rnn", self.forward_rnn, forward_carry),
                                 ("backward_rnn", self.backward_rnn, backward_carry)):
            if isinstance(rnn, RNN):
                time_axis, batch_dims = rnn._axes(inputs, time_major)
                rnn._check_inputs(inputs, time_axis, batch_dims, carry, seq_lengths,
                                  f"Bidirectional.{name}")
        if self.forward_rnn is self.backward_rnn:
            _log.warning("Bidirectional: forward_rnn and backward_rnn are one object, so "
                         "both directions share parameters.")
        forward_carry, forward_out = self.forward_rnn(
            inputs, initial_carry=forward_carry, rngs=rngs, seq_lengths=seq_lengths,
            return_carry=True, time_major=time_major, reverse=False)
        backward_carry, backward_out = self.backward_rnn(
            inputs, initial_carry=backward_carry, rngs=rngs, seq_lengths=seq_lengths,
            return_carry=True, time_major=time_major, reverse=True, keep_order=True)
        outputs = jax.tree_util.tree_map(self.merge_fn, forward_out, backward_out)
        if return_carry:
            return (forward_carry, backward_carry), outputs
        return outputs
