"""``split_inputs``/``merge_inputs``: lift any pytree transform to functions of modules.

``split_inputs(T(merge_inputs(f)))`` runs ``f`` under the JAX transform ``T``: outside,
each module or variable argument becomes a pytree (graph definition as static data,
its state as leaves); inside, ``merge_inputs`` rebuilds the objects (shared objects
stay shared), calls ``f``, and hands back the arguments' new state and the outputs;
outside again, the state is written into the caller's objects. This is the general,
slower path (a full split and merge per call); ``nnx.jit`` and friends are the fast
ones.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> from nnxlib.transforms.general import merge_inputs, split_inputs
    >>> @split_inputs
    ... @jax.jit
    ... @merge_inputs
    ... def step(counter, x):
    ...     counter.count.value += 1
    ...     return x * 2
    >>> class Counter(nnx.Module):
    ...     def __init__(self):
    ...         self.count = nnx.Variable(jnp.array(0))
    >>> counter = Counter()
    >>> step(counter, jnp.ones(2)).tolist(), int(counter.count[...])
    ([2.0, 2.0], 1)
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax

from nnxlib.graph import is_node_or_variable, split, update
from nnxlib.graph.contexts import MergeContext, SplitContext

__all__ = ["split_inputs", "merge_inputs"]


@jax.tree_util.register_pytree_node_class
class Packed:
    """One object as a pytree: its graph definition (static) and its state (leaves)."""

    def __init__(self, graphdef: Any, state: Any):
        self.graphdef = graphdef
        self.state = state

    def tree_flatten(self) -> tuple:
        return (self.state,), self.graphdef

    @classmethod
    def tree_unflatten(cls, graphdef: Any, children: tuple) -> "Packed":
        return cls(graphdef, children[0])


@jax.tree_util.register_pytree_node_class
class InputSlot:
    """An output that is the ``index``-th input object (no leaves)."""

    def __init__(self, index: int):
        self.index = index

    def tree_flatten(self) -> tuple:
        return (), self.index

    @classmethod
    def tree_unflatten(cls, index: int, children: tuple) -> "InputSlot":
        return cls(index)


def objects_in(tree: Any) -> list:
    """The graph objects (modules, variables, containers) among ``tree``'s leaves."""
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=is_node_or_variable)
    return [x for x in leaves if is_node_or_variable(x)]


def pack(tree: Any) -> Any:
    """``tree`` with each graph object replaced by a :class:`Packed`, in one index space."""
    ctx = SplitContext()
    return jax.tree_util.tree_map(
        lambda x: Packed(*ctx.split(x)) if is_node_or_variable(x) else x, tree,
        is_leaf=is_node_or_variable)


def unpack(tree: Any, ctx: MergeContext | None = None) -> Any:
    """Inverse of :func:`pack`: each :class:`Packed` becomes an object again."""
    ctx = MergeContext() if ctx is None else ctx
    return jax.tree_util.tree_map(
        lambda x: ctx.merge(x.graphdef, x.state) if isinstance(x, Packed) else x, tree,
        is_leaf=lambda x: isinstance(x, Packed))


def write_back(inputs: list, new_inputs: tuple, out: Any, ctxtag: Any = None) -> Any:
    """Write the new state of ``inputs`` into them and rebuild the outputs (the outer
    end of :func:`split_inputs`, shared with ``pmap`` and friends)."""
    ctx = MergeContext(ctxtag)
    copies = unpack(new_inputs, ctx)
    for original, copy in zip(inputs, copies):
        if original is not copy:
            _, new_state = split(copy, graph=True)
            update(original, new_state)
    out = unpack(out, ctx)
    return jax.tree_util.tree_map(
        lambda x: inputs[x.index] if isinstance(x, InputSlot) else x, out,
        is_leaf=lambda x: isinstance(x, InputSlot))


def _wrap(f: Any, ctxtag: str, body: Callable) -> Any:
    if f is None:
        return lambda g: body(g)
    return body(f)


def split_inputs(f: Callable | None = None, *, ctxtag: str = "split_merge_inputs") -> Any:
    """The outer half: pack the objects in the arguments, call ``f``, write the new
    state back into them and rebuild the objects in the outputs.

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> from nnxlib.transforms.general import merge_inputs, split_inputs
        >>> layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> same = split_inputs(jax.jit(merge_inputs(lambda m: m)))(layer)
        >>> same is layer
        True
    """
    def body(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            inputs = objects_in((args, kwargs))
            packed_args, packed_kwargs = pack((args, kwargs))
            new_inputs, out = fn(*packed_args, **packed_kwargs)
            return write_back(inputs, new_inputs, out, ctxtag)

        return wrapper

    return _wrap(f, ctxtag, body)


def merge_inputs(f: Callable | None = None, *, ctxtag: str = "split_merge_inputs") -> Any:
    """The inner half: rebuild the packed objects, call ``f``, and return
    ``(new state of the inputs, outputs)`` as pytrees for :func:`split_inputs`.

    Example:
        >>> import nnxlib as nnx
        >>> from nnxlib.transforms.general import merge_inputs, pack
        >>> packed = pack((nnx.Linear(1, 3, rngs=nnx.Rngs(0)),))
        >>> _, out = merge_inputs(lambda m: m.kernel.shape)(*packed)
        >>> out
        (1, 3)
    """
    def body(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = unpack((args, kwargs), MergeContext(ctxtag))
            inputs = objects_in((args, kwargs))
            out = fn(*args, **kwargs)
            position = {id(x): i for i, x in enumerate(inputs)}
            out = jax.tree_util.tree_map(
                lambda x: InputSlot(position[id(x)]) if id(x) in position else x, out,
                is_leaf=is_node_or_variable)
            ctx = SplitContext(ctxtag)
            new_inputs = tuple(Packed(*ctx.split(x)) for x in inputs)
            out = jax.tree_util.tree_map(
                lambda x: Packed(*ctx.split(x)) if is_node_or_variable(x) else x, out,
                is_leaf=is_node_or_variable)
            return new_inputs, out

        return wrapper

    return _wrap(f, ctxtag, body)
