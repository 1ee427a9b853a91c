"""Split and merge several graphs in one index space: ``split_context``,
``merge_context`` and ``update_context`` (flax.nnx 0.12's context API).

Plain ``nnx.split``/``nnx.merge`` calls are independent: an object shared by two
graphs split separately comes back as two objects. Inside a context, every call
shares one index space, so the sharing survives:

Example:
    >>> import nnxlib as nnx
    >>> shared = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    >>> a, b = nnx.Sequential(shared), nnx.Sequential(shared)
    >>> with nnx.split_context() as ctx:
    ...     ga, sa = ctx.split(a)
    ...     gb, sb = ctx.split(b)
    >>> with nnx.merge_context() as ctx:
    ...     a2, b2 = ctx.merge(ga, sa), ctx.merge(gb, sb)
    >>> a2.layers[0] is b2.layers[0], a2.layers[0] is shared
    (True, False)

A graph seen again in a later call is described in full again (with the same index),
so each ``(graphdef, state)`` pair also merges on its own with ``nnx.merge``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Hashable, Iterator

from nnxlib.graph import GraphDef, _graphdef, _leaves_for, _state_of
from nnxlib.state import split_state

__all__ = ["SplitContext", "MergeContext", "UpdateContext", "split_context",
           "merge_context", "update_context", "current_update_context"]


def _split_seeded(node: Any, index_of: dict, filters: tuple, first_index: int = 0
                  ) -> tuple:
    """Split ``node`` with the indices already in ``index_of`` (updated in place); new
    objects are numbered from ``first_index`` on (or after the known ones)."""
    flat = _graphdef._Flattener(index_of, first_index)
    root = flat.flatten(node, ())
    graphdef = GraphDef(root, tuple(flat.paths))
    index_of.update(flat.index_of)
    state = _state_of(graphdef.paths, flat.leaves)
    if not filters:
        return (graphdef, state), flat.objects
    parts = split_state(state, *filters)
    return (graphdef, *(parts if len(filters) > 1 else (parts,))), flat.objects


class SplitContext:
    """Splits graphs in one index space (see :func:`split_context`).

    Example:
        >>> import nnxlib as nnx
        >>> with nnx.split_context() as ctx:
        ...     graphdef, state = ctx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
        >>> sorted(state)
        ['bias', 'kernel']
    """

    def __init__(self, ctxtag: Hashable | None = None,
                 update: "UpdateContext | None" = None):
        self.ctxtag = ctxtag
        self._update = update  # the active update_context(ctxtag), which does the work
        self._index_of: dict[int, int] = {}
        self._keep: list = []  # the split objects stay alive, so ids stay unique

    def split(self, node: Any, *filters: Any) -> tuple:
        """Like ``nnx.split``, in this context's index space.

        Example:
            >>> import nnxlib as nnx
            >>> layer = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
            >>> with nnx.split_context() as ctx:
            ...     g1, _ = ctx.split(layer)
            ...     g2, _ = ctx.split(layer)
            >>> g1 == g2
            True
        """
        if self._update is not None:
            return self._update.split(node, *filters)
        result, objects = _split_seeded(node, self._index_of, filters)
        self._keep.append(objects)
        return result


class MergeContext:
    """Merges graphs in one index space (see :func:`merge_context`).

    Example:
        >>> import nnxlib as nnx
        >>> graphdef, state = nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
        >>> with nnx.merge_context() as ctx:
        ...     layer = ctx.merge(graphdef, state)
        >>> type(layer).__name__
        'Linear'
    """

    def __init__(self, ctxtag: Hashable | None = None, inner: bool | None = None,
                 update: "UpdateContext | None" = None):
        self.ctxtag = ctxtag
        self.inner = inner
        self._update = update  # the active update_context(ctxtag), which does the work
        self.objects: dict[int, Any] = {}  # index -> object built so far

    def merge(self, graphdef: GraphDef, state: Any, /, *states: Any) -> Any:
        """Like ``nnx.merge``; an index already built here is the same object again.

        Example:
            >>> import nnxlib as nnx
            >>> graphdef, state = nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
            >>> with nnx.merge_context() as ctx:
            ...     ctx.merge(graphdef, state) is ctx.merge(graphdef, state)
            True
        """
        if self._update is not None:
            return self._update.merge(graphdef, state, *states, inner=self.inner)
        leaves = _leaves_for(graphdef, (state, *states), "merge")
        built: dict[int, Any] = {}
        node = _graphdef.build(graphdef.root, iter(leaves), built, self.objects)
        self.objects.update(built)
        return node


@contextlib.contextmanager
def split_context(ctxtag: Hashable | None = None) -> Iterator[SplitContext]:
    """A context whose ``split`` calls share one index space.

    Inside an active ``update_context(ctxtag)`` the splits are that update context's
    (outside the transform before its inner merge, inside after it).

    Example:
        >>> import nnxlib as nnx
        >>> with nnx.split_context("my-transform") as ctx:
        ...     ctx.ctxtag
        'my-transform'
    """
    ctx = SplitContext(ctxtag, _active(ctxtag))
    try:
        yield ctx
    finally:  # the context lets go of what it saw (as flax.nnx's does)
        for name in ("ctxtag", "_update", "_index_of", "_keep"):
            delattr(ctx, name)


@contextlib.contextmanager
def merge_context(ctxtag: Hashable | None = None,
                  inner: bool | None = None) -> Iterator[MergeContext]:
    """A context whose ``merge`` calls share one index space.

    Inside an active ``update_context(ctxtag)`` the merges are that update context's:
    ``inner=True`` inside the transform (new objects), ``inner=False`` outside after it
    (the objects split outside are updated in place and returned).

    Example:
        >>> import nnxlib as nnx
        >>> with nnx.merge_context() as ctx:
        ...     isinstance(ctx, nnx.MergeContext)
        True
        >>> model = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
        >>> with nnx.update_context("step"):
        ...     with nnx.split_context("step") as ctx:
        ...         graphdef, state = ctx.split(model)
        ...     with nnx.merge_context("step", inner=True) as ctx:
        ...         inner = ctx.merge(graphdef, state)
        ...     inner.note = "added inside"
        ...     with nnx.split_context("step") as ctx:
        ...         graphdef, state = ctx.split(inner)
        ...     with nnx.merge_context("step", inner=False) as ctx:
        ...         outer = ctx.merge(graphdef, state)
        >>> outer is model, model.note
        (True, 'added inside')
    """
    ctx = MergeContext(ctxtag, inner, _active(ctxtag))
    try:
        yield ctx
    finally:  # the context lets go of what it built
        for name in ("ctxtag", "inner", "_update", "objects"):
            delattr(ctx, name)


def _active(ctxtag: Hashable | None) -> "UpdateContext | None":
    """The innermost active update context for ``ctxtag``, if any."""
    if ctxtag is None:
        return None
    stack = _stack(ctxtag)
    return stack[-1] if stack else None


class UpdateContext:
    """Carries changes made to graphs inside a transform back to the outer objects.

    Four calls, in order: ``split`` outside (1), ``merge`` inside (2), ``split``
    inside (3), ``merge`` outside (4). The last one updates the objects split in (1)
    in place, structure included, and returns them.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> with nnx.update_context("step") as ctx:
        ...     graphdef, state = ctx.split(model)            # (1) outside
        ...     inner = ctx.merge(graphdef, state)            # (2) inside
        ...     inner.kernel.value = jnp.zeros((2, 2))
        ...     inner.note = "changed inside"
        ...     graphdef, state = ctx.split(inner)            # (3) inside
        ...     same = ctx.merge(graphdef, state)             # (4) outside
        >>> same is model, float(model.kernel[...].sum()), model.note
        (True, 0.0, 'changed inside')
    """

    def __init__(self, tag: Hashable):
        self.tag = tag
        self._phase = 0  # calls made so far: 0 split-out, 1 merge-in, 2 split-in, 3 merge-out
        self._outer_index: dict[int, int] = {}
        self._outer_objects: dict[int, Any] = {}
        self._inner_index: dict[int, int] = {}
        self._inner_objects: dict[int, Any] = {}  # index -> object built inside

    def split(self, node: Any, *filters: Any) -> tuple:
        """``split`` outside before the transform (1), or inside after the call (3).

        Example:
            >>> import nnxlib as nnx
            >>> with nnx.update_context("t") as ctx:
            ...     graphdef, state = ctx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
            >>> sorted(state)
            ['bias', 'kernel']
        """
        if self._phase <= 0:
            result, objects = _split_seeded(node, self._outer_index, filters)
            self._outer_objects.update(objects)
            return result
        self._phase = 2
        # objects made inside get indices after every outer one
        first = max(self._outer_index.values(), default=-1) + 1
        result, _ = _split_seeded(node, self._inner_index, filters, first)
        return result

    def merge(self, graphdef: GraphDef, state: Any, /, *states: Any,
              inner: bool | None = None) -> Any:
        """``merge`` inside the transform (2), or outside after it (4); ``inner`` says
        which (by default: inside until the inner split has been made).

        Example:
            >>> import nnxlib as nnx
            >>> with nnx.update_context("t") as ctx:
            ...     graphdef, state = ctx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
            ...     inner = ctx.merge(graphdef, state)
            >>> type(inner).__name__
            'Linear'
        """
        leaves = _leaves_for(graphdef, (state, *states), "merge")
        if inner if inner is not None else self._phase <= 1:
            # inside: fresh objects that keep the outer indices (one object per index
            # across the inner merges)
            self._phase = 1
            built: dict[int, Any] = {}
            node = _graphdef.build(graphdef.root, iter(leaves), built,
                                   self._inner_objects)
            self._inner_objects.update(built)
            self._inner_index.update({id(obj): index for index, obj in built.items()})
            return node
        self._phase = 3
        built = {}
        return _graphdef.build(graphdef.root, iter(leaves), built, self._outer_objects)


_ACTIVE = threading.local()


def _stack(tag: Hashable) -> list:
    stacks = getattr(_ACTIVE, "stacks", None)
    if stacks is None:
        stacks = _ACTIVE.stacks = {}
    return stacks.setdefault(tag, [])


@contextlib.contextmanager
def update_context(tag: Hashable) -> Iterator[UpdateContext]:
    """An :class:`UpdateContext` for ``tag``, active (see :func:`current_update_context`)
    while the ``with`` block runs.

    Example:
        >>> import nnxlib as nnx
        >>> with nnx.update_context("train") as ctx:
        ...     nnx.current_update_context("train") is ctx
        True
    """
    ctx = UpdateContext(tag)
    stack = _stack(tag)
    stack.append(ctx)
    try:
        yield ctx
    finally:
        stack.pop()


def current_update_context(tag: Hashable) -> UpdateContext:
    """The innermost active :class:`UpdateContext` for ``tag``.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.current_update_context("nothing-active")
        Traceback (most recent call last):
        ValueError: No update context is active for tag 'nothing-active'. ...
    """
    stack = _stack(tag)
    if not stack:
        raise ValueError(
            f"No update context is active for tag {tag!r}. Hint: call it inside "
            f"`with nnx.update_context({tag!r}):`."
        )
    return stack[-1]
