"""State: the values of a module graph as a nested mapping, and a JAX pytree.

``split`` returns a :class:`State` whose keys follow attribute paths
(``state['blocks'][0]['linear']['kernel']``) and whose leaves are the graph's
``Variable`` objects (or raw arrays held directly by module attributes). A ``State`` is
a pytree whose leaves are those values, so ``jax.tree.map`` and every JAX transform work
on it directly.

Internally a ``State`` made by ``split`` stays *flat* (a sorted tuple of paths plus a
list of leaves) until someone indexes into it: building the nested dicts costs time that
the hot path (split, pass to a transform, merge) never needs.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> state = nnx.State({"linear": {"kernel": nnx.Param(jnp.ones((2, 2)))}})
    >>> state["linear"]["kernel"].shape
    (2, 2)
    >>> [path for path, _ in nnx.to_flat_state(state)]
    [('linear', 'kernel')]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Callable, Generic, TypeVar

import jax

from nnxlib import filters as filterlib
from nnxlib.display import render_state
from nnxlib.errors import StateMismatchError, format_path
from nnxlib.variables import Variable

__all__ = [
    "State",
    "FlatState",
    "key_order",
    "to_flat_state",
    "from_flat_state",
    "filter_state",
    "split_state",
    "merge_state",
    "map_state",
    "to_pure_dict",
    "replace_by_pure_dict",
]

Path = tuple


def key_order(key: Any) -> tuple:
    """Sort key that orders ints before strings before anything else.

    Attribute names, list indices and dict keys can mix; this keeps path order stable.

    Example:
        >>> sorted(["b", 1, "a", 0], key=key_order)
        [0, 1, 'a', 'b']
    """
    if isinstance(key, int):
        return (0, key, "")
    if isinstance(key, str):
        return (1, 0, key)
    return (2, 0, repr(key))


class FlatState:
    """A sorted sequence of ``(path, leaf)`` pairs: the flat view of a :class:`State`.

    Example:
        >>> import nnxlib as nnx
        >>> flat = nnx.to_flat_state(nnx.State({"a": {"b": 1, "c": 2}}))
        >>> flat.paths, flat.leaves
        ((('a', 'b'), ('a', 'c')), [1, 2])
    """

    __slots__ = ("paths", "leaves")

    def __init__(self, pairs: Any = (), *, _paths: tuple | None = None,
                 _leaves: list | None = None):
        if _paths is not None:
            self.paths, self.leaves = _paths, _leaves
            return
        if isinstance(pairs, Mapping):  # {path: leaf}
            pairs = pairs.items()
        items = sorted(
            ((tuple(p), v) for p, v in pairs), key=lambda kv: tuple(map(key_order, kv[0]))
        )
        self.paths = tuple(p for p, _ in items)
        self.leaves = [v for _, v in items]

    def __iter__(self) -> Iterator[tuple[Path, Any]]:
        return iter(zip(self.paths, self.leaves))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Path, Any]:
        return self.paths[index], self.leaves[index]

    def to_nested_state(self) -> "State":
        """Return the nested :class:`State` with the same paths and leaves.

        Example:
            >>> import nnxlib as nnx
            >>> flat = nnx.State({"a": {"b": nnx.Param(1.0)}}).flat_state()
            >>> flat.to_nested_state()["a"]["b"][...]
            1.0
        """
        return State._from_flat(self.paths, list(self.leaves))

    def __repr__(self) -> str:
        body = "".join(f"\n  ({p!r}, {_leaf_repr(v)})," for p, v in self)
        return f"FlatState([{body}\n])"


K = TypeVar("K")  # key and leaf types, for annotations: ``nnx.State[str, nnx.Param]``
V = TypeVar("V")


class State(MutableMapping, Generic[K, V]):
    """A nested mapping from attribute paths to leaves (variables or arrays).

    Build one from a nested dict, or get one from ``nnx.state`` / ``nnx.split``. String
    keys can also be read as attributes.

    Example:
        >>> import nnxlib as nnx
        >>> s = nnx.State({"layer": {"w": nnx.Param(1.0), "mean": nnx.BatchStat(0.0)}})
        >>> params, rest = s.split(nnx.Param, ...)
        >>> list(params.layer), list(rest.layer)
        (['w'], ['mean'])
    """

    __slots__ = ("_dict", "_paths", "_leaves")

    def __init__(self, mapping: Mapping | Iterator | None = None, /):
        object.__setattr__(self, "_paths", None)
        object.__setattr__(self, "_leaves", None)
        object.__setattr__(self, "_dict", _to_nested_dict(mapping or {}))

    @classmethod
    def _from_flat(cls, paths: tuple, leaves: list) -> "State":
        """Wrap sorted ``paths`` and matching ``leaves`` without building dicts."""
        state = object.__new__(cls)
        object.__setattr__(state, "_dict", None)
        object.__setattr__(state, "_paths", paths)
        object.__setattr__(state, "_leaves", leaves)
        return state

    @classmethod
    def _view(cls, nested: dict) -> "State":
        state = object.__new__(cls)
        object.__setattr__(state, "_paths", None)
        object.__setattr__(state, "_leaves", None)
        object.__setattr__(state, "_dict", nested)
        return state

    # ---------------------------------------------------------------- flat access
    def _flat(self) -> tuple[tuple, list]:
        if self._paths is not None:
            return self._paths, self._leaves
        paths: list = []
        leaves: list = []
        _walk_nested(self._dict, (), paths, leaves)
        return tuple(paths), leaves

    def _nested(self) -> dict:
        if self._dict is None:
            root: dict = {}
            for path, leaf in zip(self._paths, self._leaves):
                node = root
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = leaf
            object.__setattr__(self, "_dict", root)
            object.__setattr__(self, "_paths", None)
            object.__setattr__(self, "_leaves", None)
        return self._dict

    def flat_state(self) -> FlatState:
        """Return the :class:`FlatState` view (sorted ``(path, leaf)`` pairs).

        Example:
            >>> import nnxlib as nnx
            >>> list(nnx.State({"b": 2, "a": 1}).flat_state())
            [(('a',), 1), (('b',), 2)]
        """
        paths, leaves = self._flat()
        return FlatState(_paths=paths, _leaves=list(leaves))

    # ------------------------------------------------------------- mapping protocol
    def __getitem__(self, key: Any) -> Any:
        value = self._nested()[key]
        return State._view(value) if isinstance(value, dict) else value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._nested()[key] = _to_nested_dict(value) if isinstance(value, Mapping) else value

    def __delitem__(self, key: Any) -> None:
        del self._nested()[key]

    def __iter__(self) -> Iterator:
        return iter(self._nested())

    def __len__(self) -> int:
        return len(self._nested())

    def __contains__(self, key: object) -> bool:
        return key in self._nested()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"State has no key {name!r}; keys are {sorted(map(str, self))}."
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __eq__(self, other: object) -> bool:
        # As a Mapping (flax.nnx's too): equal keys and equal values, e.g. State({}) == {}.
        if self is other:
            return True
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        return (State, (self._nested(),))  # pickle and copy rebuild it from the dict

    def __repr__(self) -> str:
        return f"State({_nested_repr(self._nested(), 0)})"

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        return render_state(self, path, subtree_renderer)

    # ------------------------------------------------------------------ operations
    def filter(self, first: Any, /, *filters: Any) -> Any:
        """Keep the leaves matching a filter; with several filters return one State each.

        Example:
            >>> import nnxlib as nnx
            >>> s = nnx.State({"w": nnx.Param(1.0), "m": nnx.BatchStat(0.0)})
            >>> list(s.filter(nnx.Param))
            ['w']
        """
        return filter_state(self, first, *filters)

    def split(self, first: Any, /, *filters: Any) -> Any:
        """Partition the leaves by filters (each leaf goes to the first that matches).

        Every leaf must match some filter; end with ``...`` to catch the rest.

        Example:
            >>> import nnxlib as nnx
            >>> s = nnx.State({"w": nnx.Param(1.0), "m": nnx.BatchStat(0.0)})
            >>> params, rest = s.split(nnx.Param, ...)
            >>> list(params), list(rest)
            (['w'], ['m'])
        """
        return split_state(self, first, *filters)

    @staticmethod
    def merge(state: Mapping, /, *states: Mapping) -> "State":
        """Combine states into one (later states win on equal paths).

        Example:
            >>> import nnxlib as nnx
            >>> merged = nnx.State.merge(nnx.State({"a": 1}), nnx.State({"b": 2}))
            >>> sorted(merged)
            ['a', 'b']
        """
        return merge_state(state, *states)

    def to_pure_dict(self, extract_fn: Callable[[Any], Any] | None = None) -> dict:
        """Nested plain dict with each variable replaced by its value.

        Example:
            >>> import nnxlib as nnx
            >>> nnx.State({"w": nnx.Param(1.0)}).to_pure_dict()
            {'w': 1.0}
        """
        return to_pure_dict(self, extract_fn)

    def replace_by_pure_dict(self, pure_dict: Mapping, replace_fn: Callable | None = None,
                             *, partial: bool = False) -> None:
        """Replace leaf values from a pure dict (as made by :meth:`to_pure_dict`).

        The dict must fit the state (see :func:`replace_by_pure_dict`; ``partial=True``
        lets it leave paths out).

        Example:
            >>> import nnxlib as nnx
            >>> s = nnx.State({"w": nnx.Param(1.0)})
            >>> s.replace_by_pure_dict({"w": 5.0})
            >>> s["w"].value
            5.0
        """
        replace_by_pure_dict(self, pure_dict, replace_fn, partial=partial)


def _to_nested_dict(mapping: Any) -> dict:
    if isinstance(mapping, State):
        return {k: _to_nested_dict(v) if isinstance(v, (dict, State)) else v
                for k, v in mapping._nested().items()}
    if isinstance(mapping, Mapping):
        return {k: _to_nested_dict(v) if isinstance(v, Mapping) else v
                for k, v in mapping.items()}
    return _to_nested_dict(dict(mapping))


def _walk_nested(node: dict, prefix: tuple, paths: list, leaves: list) -> None:
    for key in sorted(node, key=key_order):
        value = node[key]
        if isinstance(value, dict):
            _walk_nested(value, prefix + (key,), paths, leaves)
        else:
            paths.append(prefix + (key,))
            leaves.append(value)


def _leaf_repr(value: Any) -> str:
    return repr(value).replace("\n", "\n  ")


def _nested_repr(node: dict, depth: int) -> str:
    if not node:
        return "{}"
    pad = "  " * (depth + 1)
    lines = []
    for key in sorted(node, key=key_order):
        value = node[key]
        text = (_nested_repr(value, depth + 1) if isinstance(value, dict)
                else repr(value).replace("\n", "\n" + pad))
        lines.append(f"{pad}{key!r}: {text}")
    return "{\n" + ",\n".join(lines) + "\n" + "  " * depth + "}"


def _flatten_state(state: State) -> tuple[list, tuple]:
    paths, leaves = state._flat()
    return leaves, paths


def _unflatten_state(paths: tuple, leaves: Any) -> State:
    return State._from_flat(paths, list(leaves))


jax.tree_util.register_pytree_node(State, _flatten_state, _unflatten_state)


# ---------------------------------------------------------------------- functions
def to_flat_state(state: Mapping) -> FlatState:
    """Return the sorted ``(path, leaf)`` view of a state.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.to_flat_state(nnx.State({"a": {"b": 1}})).paths
        (('a', 'b'),)
    """
    return _as_state(state).flat_state()


def from_flat_state(flat_state: Any, *, cls: type[State] = State) -> State:
    """Build a nested :class:`State` from ``(path, leaf)`` pairs, a ``{path: leaf}``
    dict or a :class:`FlatState`.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.from_flat_state([(("a", "b"), 1)])["a"]["b"]
        1
        >>> sorted(nnx.from_flat_state({("a", "b"): 1, ("c",): 2}))
        ['a', 'c']
    """
    flat = flat_state if isinstance(flat_state, FlatState) else FlatState(flat_state)
    return cls._from_flat(flat.paths, list(flat.leaves))


def _as_state(state: Mapping) -> State:
    return state if isinstance(state, State) else State(state)


def filter_state(state: Mapping, first: Any, /, *filters: Any) -> Any:
    """Keep leaves matching ``first`` (or one State per filter when given several:
    each leaf goes to the first filter that matches it, and a leaf matching none is
    left out).

    Example:
        >>> import nnxlib as nnx
        >>> s = nnx.State({"w": nnx.Param(1.0), "m": nnx.BatchStat(0.0)})
        >>> list(nnx.filter_state(s, "batch_stats"))
        ['m']
        >>> [list(part) for part in nnx.filter_state(s, nnx.Param, ...)]
        [['w'], ['m']]
    """
    paths, leaves = _as_state(state)._flat()
    predicates = [filterlib.to_predicate(f) for f in (first, *filters)]
    groups: list[list[int]] = [[] for _ in predicates]
    for i, (p, v) in enumerate(zip(paths, leaves)):
        for group, predicate in zip(groups, predicates):
            if predicate(p, v):
                group.append(i)
                break
    results = [State._from_flat(tuple(paths[i] for i in keep), [leaves[i] for i in keep])
               for keep in groups]
    return results[0] if not filters else tuple(results)


def split_state(state: Mapping, first: Any, /, *filters: Any) -> Any:
    """Partition a state by filters; every leaf must match one (end with ``...``).

    Example:
        >>> import nnxlib as nnx
        >>> s = nnx.State({"w": nnx.Param(1.0), "m": nnx.BatchStat(0.0)})
        >>> params, stats = nnx.split_state(s, nnx.Param, nnx.BatchStat)
        >>> list(params), list(stats)
        (['w'], ['m'])
    """
    all_filters = (first, *filters)
    paths, leaves = _as_state(state)._flat()
    groups = partition_indices(paths, leaves, all_filters)
    results = tuple(
        State._from_flat(tuple(paths[i] for i in idx), [leaves[i] for i in idx])
        for idx in groups
    )
    return results[0] if not filters else results


def partition_indices(paths: tuple, leaves: list, filters: tuple) -> list[list[int]]:
    """Leaf indices per filter, first match wins; raise if a leaf matches none."""
    filterlib.check_partition_filters(filters)
    predicates = [filterlib.to_predicate(f) for f in filters]
    groups: list[list[int]] = [[] for _ in filters]
    for i, (path, leaf) in enumerate(zip(paths, leaves)):
        for group, predicate in zip(groups, predicates):
            if predicate(path, leaf):
                group.append(i)
                break
        else:
            raise ValueError(
                f"The leaf at path {format_path(path)!r} "
                f"({type(leaf).__name__}) matches none of the filters {filters!r} "
                "(Non-exhaustive filters, got a non-empty remainder). "
                "Hint: add `...` as the last filter to collect the remaining state."
            )
    return groups


def merge_state(state: Mapping, /, *states: Mapping, cls: type = State) -> State:
    """Combine several states into one; later states win on equal paths.

    ``cls`` is the type of the result (a ``State`` subclass, or ``dict`` for nested
    plain dicts).

    Example:
        >>> import nnxlib as nnx
        >>> sorted(nnx.merge_state(nnx.State({"a": 1}), nnx.State({"b": 2})))
        ['a', 'b']
    """
    if not states:
        paths, leaves = _as_state(state)._flat()
        merged = State._from_flat(paths, list(leaves))
    else:
        combined: dict = {}
        for s in (state, *states):
            paths, leaves = _as_state(s)._flat()
            combined.update(zip(paths, leaves))
        merged = from_flat_state(combined.items())
    if cls is State:
        return merged
    if cls is dict:  # nested plain dicts holding the same leaves
        return _plain(merged._nested())
    return cls(merged)


def _plain(node: Any) -> Any:
    return {k: _plain(v) for k, v in node.items()} if isinstance(node, dict) else node


def map_state(f: Callable[[tuple, Any], Any], state: Mapping) -> State:
    """Apply ``f(path, leaf)`` to every leaf and return a new state.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.map_state(lambda path, x: x * 10, nnx.State({"a": 1}))["a"]
        10
    """
    paths, leaves = _as_state(state)._flat()
    return State._from_flat(paths, [f(p, v) for p, v in zip(paths, leaves)])


def to_pure_dict(state: Mapping, extract_fn: Callable[[Any], Any] | None = None) -> dict:
    """Nested plain dict of values: variables are replaced by their values.

    ``extract_fn(leaf)``, when given, computes each entry instead (e.g. to keep some
    metadata next to the value).

    Example:
        >>> import nnxlib as nnx
        >>> state = nnx.State({"a": {"w": nnx.Param(2.0)}})
        >>> nnx.to_pure_dict(state)
        {'a': {'w': 2.0}}
        >>> nnx.to_pure_dict(state, lambda v: type(v).__name__)
        {'a': {'w': 'Param'}}
    """
    if extract_fn is None:
        def extract_fn(v: Any) -> Any:
            return v._raw_value if isinstance(v, Variable) else v

    def convert(node: dict) -> dict:
        return {k: convert(v) if isinstance(v, dict) else extract_fn(v)
                for k, v in node.items()}

    return convert(_as_state(state)._nested())


def replace_by_pure_dict(state: State, pure_dict: Mapping,
                         replace_fn: Callable | None = None, *, partial: bool = False
                         ) -> None:
    """Replace the leaves of ``state`` in place from a pure dict of values.

    Variables are replaced by copies holding the new value (the originals, which may
    belong to a live model, are not mutated); call ``nnx.update(model, state)`` to write
    the values into a model. Keys may be strings where the state has ints (as after a
    round trip through a checkpoint format that stringifies keys).

    The pure dict must fit the state: every path of the state present (unless
    ``partial=True``; a leaf that is still abstract, a ``ShapeDtypeStruct``, must be
    given even then), no path the state lacks, and (with the default ``replace_fn``)
    each value of the same shape and dtype as the leaf it replaces. Otherwise a
    :class:`~nnxlib.errors.StateMismatchError` lists every mismatched path and the state
    is left unchanged. (``flax.nnx`` skips missing paths silently and does not compare
    shapes: a forgotten key then leaves an abstract placeholder in the model.)

    Example:
        >>> import nnxlib as nnx
        >>> s = nnx.State({"w": nnx.Param(1.0), "b": nnx.Param(0.0)})
        >>> nnx.replace_by_pure_dict(s, {"w": 3.0, "b": 1.0})
        >>> s["w"].value
        3.0
        >>> nnx.replace_by_pure_dict(s, {"w": 4.0}, partial=True)   # "b" is kept
        >>> s["w"].value, s["b"].value
        (4.0, 1.0)
    """
    check_values = replace_fn is None
    if replace_fn is None:
        def replace_fn(old: Any, new: Any) -> Any:
            return old.replace(new) if isinstance(old, Variable) else new
    current = dict(zip(*state._flat()))
    by_string = {tuple(map(str, p)): p for p in current}
    replacements: dict = {}
    extra, wrong = [], []
    for path, value in State(pure_dict).flat_state():
        target = path if path in current else by_string.get(tuple(map(str, path)))
        if target is None:
            extra.append(path)
            continue
        replacements[target] = value
        if check_values:
            problem = _value_mismatch(current[target], value)
            if problem:
                wrong.append((target, problem))
    missing = [p for p, leaf in current.items() if p not in replacements
               and (not partial or _is_abstract(leaf))]
    if extra or missing or wrong:
        raise _pure_dict_mismatch(extra, missing, wrong, list(current))
    updated = dict(current)
    for target, value in replacements.items():
        updated[target] = replace_fn(current[target], value)
    new = from_flat_state(updated.items())
    object.__setattr__(state, "_dict", new._nested())
    object.__setattr__(state, "_paths", None)
    object.__setattr__(state, "_leaves", None)


def _raw_leaf(leaf: Any) -> Any:
    return leaf._raw_value if isinstance(leaf, Variable) else leaf


def _is_abstract(leaf: Any) -> bool:
    return isinstance(_raw_leaf(leaf), jax.ShapeDtypeStruct)


def _shape_and_dtype(x: Any) -> tuple[tuple, Any] | None:
    """``(shape, canonical dtype)`` of an array-like; dtype None for a Python number
    (it takes the leaf's dtype); None for anything without a shape."""
    if isinstance(x, (bool, int, float, complex)):
        return (), None
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is None or dtype is None:
        return None
    try:
        dtype = jax.dtypes.canonicalize_dtype(dtype)
    except (TypeError, ValueError):  # e.g. a key dtype: compare it as it is
        pass
    return tuple(shape), dtype


def _value_mismatch(leaf: Any, value: Any) -> str:
    """Why ``value`` cannot replace ``leaf`` ('' when it can)."""
    old, new = _shape_and_dtype(_raw_leaf(leaf)), _shape_and_dtype(value)
    if old is None or new is None:
        return ""
    if old[0] != new[0]:
        return f"expected shape {old[0]}, got {new[0]}"
    if old[1] is not None and new[1] is not None and old[1] != new[1]:
        return f"expected dtype {old[1]}, got {new[1]}"
    return ""


def _pure_dict_mismatch(extra: list, missing: list, wrong: list,
                        known: list) -> StateMismatchError:
    lines = [f"  {format_path(p)}: not in the state" for p in extra]
    lines += [f"  {format_path(p)}: missing from the pure dict" for p in missing]
    lines += [f"  {format_path(p)}: {problem}" for p, problem in wrong]
    hints = []
    if extra or missing:
        shown = ", ".join(format_path(p) for p in sorted(known, key=str)[:8])
        hints.append(f"the state's paths are {shown}{', ...' if len(known) > 8 else ''}; "
                     "build the pure dict with state.to_pure_dict() to get matching keys")
    if missing and not extra:
        hints.append("pass partial=True to keep the leaves the dict leaves out")
    if wrong:
        hints.append("the pure dict probably comes from a model built with other sizes "
                     "or dtypes; build the state from the same model configuration")
    return StateMismatchError(
        f"replace_by_pure_dict: the pure dict does not fit the state at "
        f"{len(lines)} path(s); nothing was replaced:\n" + "\n".join(lines)
        + "\nHint: " + "; ".join(hints) + "."
    )
