"""Random number streams as state: ``Rngs`` and ``RngStream``.

Each named stream holds a base key and a counter, both variables. Calling a stream
returns ``fold_in(key, count)`` and increments the counter, so keys never repeat and
the stream's position is part of the model state: it survives split/merge and every
transform, and ``Rngs(0)`` yields the same keys whether used eagerly or under ``jit``.

Example:
    >>> import nnxlib as nnx
    >>> rngs = nnx.Rngs(0, dropout=1)
    >>> k1, k2 = rngs.params(), rngs.params()   # 'params' falls back to 'default'
    >>> bool((k1 == k2))
    False
    >>> int(rngs.default.count[...]), int(rngs.dropout.count[...])
    (2, 0)
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
from jax.core import Tracer

from nnxlib import graph as graphlib
from nnxlib._rng_sampling import RandomSamplers
from nnxlib.errors import InvalidArgumentError, MissingRngStreamAttributeError
from nnxlib.filters import to_predicate
from nnxlib.graph.mode import Mode, resolve_mode
from nnxlib.module import Object
from nnxlib.variables import A, Variable, _tracking
from nnxlib.variables._raw import is_ref_mode

__all__ = ["RngState", "RngKey", "RngCount", "RngStream", "Rngs", "split_rngs", "fork_rngs",
           "restore_rngs", "reseed", "SplitBackups"]


class RngState(Variable[A]):
    """Base class of the variables an :class:`RngStream` holds (its key and its count).

    Use it as a filter for all RNG state, e.g. ``nnx.StateAxes({nnx.RngState: 0, ...: None})``.

    Example:
        >>> import nnxlib as nnx
        >>> sorted(nnx.state(nnx.Rngs(0), nnx.RngState)["default"])
        ['count', 'key']
    """


class RngKey(RngState[A]):
    """The base key of an :class:`RngStream` (metadata ``tag`` is the stream name).

    Example:
        >>> import nnxlib as nnx
        >>> isinstance(nnx.Rngs(0).default.key, nnx.RngKey)
        True
    """


class RngCount(RngState[A]):
    """The number of keys drawn from an :class:`RngStream`.

    Example:
        >>> import nnxlib as nnx
        >>> int(nnx.Rngs(0).default.count[...])
        0
    """


def _as_key(seed: Any) -> jax.Array:
    if isinstance(seed, int):
        return jax.random.key(seed)
    seed = jnp.asarray(seed)
    if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return seed
    if seed.dtype == jnp.uint32 and seed.shape[-1:] == (2,):
        return jax.random.wrap_key_data(seed)
    if jnp.issubdtype(seed.dtype, jnp.integer) and seed.ndim == 0:
        return jax.random.key(seed)
    raise TypeError(
        f"Cannot make an RNG key from {type(seed).__name__} with dtype {seed.dtype} and "
        f"shape {seed.shape}. Expected an int seed or a key from jax.random.key."
    )


@jax.jit
def _next_key(key: jax.Array, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A stream's next key and count, as one compiled call (eager streams)."""
    return jax.random.fold_in(key, count), count + 1


class RngStream(RandomSamplers, Object):
    """One named stream: ``stream()`` returns a fresh key each call.

    Sampling methods draw with the stream's next key (``stream.normal((2,))``, see
    ``nnxlib._rng_sampling``).

    Example:
        >>> import nnxlib as nnx
        >>> stream = nnx.RngStream(0, tag="noise")
        >>> stream().shape, int(stream.count[...])
        ((), 1)
    """

    def __init__(self, key: Any, *, tag: str):
        self.key = RngKey(_as_key(key), tag=tag)
        self.count = RngCount(jnp.zeros(jnp.shape(self.key[...]), jnp.uint32), tag=tag)
        self.tag = tag

    def __call__(self) -> jax.Array:
        count = self.count
        if count._nnx_trace is not None and count._nnx_trace != _tracking.current_trace() \
                and not is_ref_mode(count._metadata):  # refs may be used from any trace
            # before the key is read: a stream leaked from a finished jax trace holds
            # tracers, and JAX's own error would not say what went wrong
            _tracking.check_trace(count, "set the value")
        key, n = self.key[...], count[...]
        if (isinstance(key, jax.Array) and isinstance(n, jax.Array) and key.shape == ()
                and not isinstance(key, Tracer) and not isinstance(n, Tracer)):
            # Eager: one compiled call instead of two op-by-op dispatches (the fold_in
            # and the increment); the same computation, so the same bits. Under a
            # transform the values are tracers and take the plain path below, which
            # adds exactly these two operations to the traced program.
            key, count[...] = _next_key(key, n)
            return key
        key = jax.random.fold_in(key, n)
        count[...] = n + 1
        return key

    def fork(self, *, split: int | tuple[int, ...] | None = None) -> "RngStream":
        """A new stream seeded from this one (``split`` gives a batch of keys).

        Example:
            >>> import nnxlib as nnx
            >>> nnx.RngStream(0, tag="a").fork(split=4).key.shape
            (4,)
        """
        split = _check_split(split, "RngStream.fork", "split")  # before the count moves
        key = self()
        if split is not None:
            key = jax.random.split(key, split)
        return RngStream(key, tag=self.tag)

    def split(self, k: int | tuple[int, ...]) -> "RngStream":
        """A new stream holding ``k`` keys split from this stream's next key.

        Example:
            >>> import nnxlib as nnx
            >>> nnx.RngStream(0, tag="a").split((2, 3)).key.shape
            (2, 3)
        """
        return self.fork(split=k)

    def broadcast(self, k: int | tuple[int, ...]) -> "RngStream":
        """A new stream holding this stream's next key repeated ``k`` times (``k`` is
        put in front of the key's shape).

        Example:
            >>> import nnxlib as nnx
            >>> keys = nnx.RngStream(0, tag="a").broadcast(3).key[...]
            >>> keys.shape, bool((keys[0] == keys[2]))
            ((3,), True)
        """
        shape = _check_split(k, "RngStream.broadcast", "k", required=True)
        shape = (shape,) if isinstance(shape, int) else shape
        key = self()
        return RngStream(jnp.broadcast_to(key, shape + jnp.shape(key)), tag=self.tag)


class Rngs(RandomSamplers, Object):
    """A set of named :class:`RngStream` s; unknown names fall back to ``default``.

    Sampling methods draw from the default stream: ``rngs.normal((2, 3))``.

    ``Rngs(0)`` makes a ``default`` stream; keyword arguments (or a mapping given as
    the first argument) add named streams.
    Streams are read as attributes (``rngs.dropout()``), items (``rngs['dropout']()``)
    or, for the default stream, by calling ``rngs()``.

    Example:
        >>> import nnxlib as nnx
        >>> rngs = nnx.Rngs(params=0, dropout=1)
        >>> sorted(name for name, _ in rngs.items())
        ['dropout', 'params']
        >>> rngs.dropout().dtype
        key<fry>
    """

    def __init__(self, default: Any = None, /, **rngs: Any):
        if isinstance(default, Mapping):
            rngs = {**default, **rngs}
        elif default is not None:
            rngs = {"default": default, **rngs}
        for name, value in rngs.items():
            stream = value if isinstance(value, RngStream) else RngStream(value, tag=name)
            setattr(self, name, stream)

    def _stream(self, name: str) -> RngStream:
        streams = self.__dict__
        stream = streams.get(name)
        if isinstance(stream, RngStream):
            return stream
        default = streams.get("default")
        if isinstance(default, RngStream):
            return default
        raise MissingRngStreamAttributeError(
            f"No RngStream named {name!r} and no 'default' stream to fall back to; "
            f"streams are {sorted(n for n, s in streams.items() if isinstance(s, RngStream))}"
            f". Hint: create it with nnx.Rngs(..., {name}=seed) or give a default seed: "
            "nnx.Rngs(0)."
        )

    def __getattr__(self, name: str) -> RngStream:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._stream(name)

    def __getitem__(self, name: str) -> RngStream:
        return self._stream(name)

    def __call__(self) -> jax.Array:
        return self._stream("default")()

    def __contains__(self, name: str) -> bool:
        return isinstance(self.__dict__.get(name), RngStream)

    def __len__(self) -> int:
        return sum(isinstance(s, RngStream) for s in self.__dict__.values())

    def __iter__(self) -> Iterator[str]:
        return (n for n, s in self.__dict__.items() if isinstance(s, RngStream))

    def items(self) -> Iterator[tuple[str, RngStream]]:
        """Yield ``(name, stream)`` pairs.

        Example:
            >>> import nnxlib as nnx
            >>> [name for name, _ in nnx.Rngs(0).items()]
            ['default']
        """
        return ((n, s) for n, s in self.__dict__.items() if isinstance(s, RngStream))

    def fork(self, *, split: Any = None) -> "Rngs":
        """A new ``Rngs`` seeded from this one; ``split`` may be an int, a shape, or a
        dict mapping stream filters to split sizes.

        Example:
            >>> import nnxlib as nnx
            >>> nnx.Rngs(0).fork(split=3).default.key.shape
            (3,)
        """
        # Every size is checked before any stream advances: a bad one changes nothing.
        sizes = [(name, stream, _check_split(_split_size_for(name, stream, split),
                                             "Rngs.fork", f"split for stream {name!r}"))
                 for name, stream in self.items()]
        return Rngs(**{name: stream.fork(split=size) for name, stream, size in sizes})


    def split(self, k: Any) -> "Rngs":
        """A new ``Rngs`` whose streams hold ``k`` split keys each; ``k`` is a size, a
        shape, or a dict from stream filters to sizes (first match wins). A stream the
        dict gives ``None`` or does not match is carried over as it is (the same stream).

        Example:
            >>> import nnxlib as nnx
            >>> rngs = nnx.Rngs(params=0, dropout=1)
            >>> new = rngs.split({"params": 4, ...: None})
            >>> new.params.key.shape, new.dropout.key.shape, new.dropout is rngs.dropout
            ((4,), (), True)
        """
        return self._per_stream(k, "Rngs.split", RngStream.split)

    def broadcast(self, k: Any) -> "Rngs":
        """A new ``Rngs`` whose streams hold their next key repeated to shape ``k``
        (a size, a shape, or a dict from stream filters to shapes; a stream given
        ``None`` or not matched is carried over as it is).

        Example:
            >>> import nnxlib as nnx
            >>> nnx.Rngs(0).broadcast(5).default.key.shape
            (5,)
        """
        return self._per_stream(k, "Rngs.broadcast", RngStream.broadcast)

    def _per_stream(self, k: Any, where: str, make: Callable) -> "Rngs":
        # Every size is checked before any stream advances: a bad one changes nothing.
        sizes = [(name, stream, _check_split(_split_size_for(name, stream, k), where,
                                             f"the size for stream {name!r}"))
                 for name, stream in self.items()]
        return Rngs(**{name: stream if size is None else make(stream, size)
                       for name, stream, size in sizes})


def _check_split(split: Any, where: str, what: str, *, required: bool = False) -> Any:
    """``split`` as ``None``, an int or a tuple of ints, each at least 1; raise
    :class:`InvalidArgumentError` otherwise (nothing has been drawn yet)."""
    if split is None and not required:
        return None
    dims = split if isinstance(split, (tuple, list)) else (split,)
    try:
        if any(isinstance(d, bool) for d in dims):
            raise TypeError
        sizes = tuple(operator.index(d) for d in dims)
    except TypeError:
        raise InvalidArgumentError(
            f"{where}: {what} must be an int or a tuple of ints (the number or shape of "
            f"keys to make), got {split!r} of type {type(split).__name__}. Hint: e.g. "
            "split=4 or split=(2, 3)."
        ) from None
    if any(d < 1 for d in sizes):
        raise InvalidArgumentError(
            f"{where}: {what} must be at least 1 in every dimension, got {split!r}. Hint: "
            "pass the number of keys wanted (the batch size or number of steps), e.g. "
            "split=4; leave split out to get a single key."
        )
    return sizes if isinstance(split, (tuple, list)) else sizes[0]


def _split_size_for(name: str, stream: RngStream, split: Any) -> Any:
    if not isinstance(split, Mapping):
        return split
    for f, size in split.items():
        if to_predicate(f)((name,), stream.key):
            return size
    return None


# ------------------------------------------------------------------ rewriting streams
# split_rngs, fork_rngs and with_rngs share one mechanism: a `decide(path, stream)`
# rule names, for each stream of a graph, the function that makes its replacement from
# it (drawing one key), or None. The rule is planned over the whole graph first, so that
# a bad input raises before any stream advances; the plan is then applied in place
# (graph updates: the streams hold the new keys, and backups restore them) or to a copy
# that shares every other variable with the original.

Maker = Callable[[RngStream], RngStream]
Decide = Callable[[tuple, RngStream], "Maker | None"]
_MISSING: Any = object()  # no node given: the call makes a decorator


class SplitBackups(list):
    """The ``(stream, key, count)`` triples saved by ``split_rngs``/``fork_rngs`` (graph
    updates) or ``backup_keys``; ``nnx.restore_rngs`` puts them back, and so does
    leaving a ``with`` block.

    Example:
        >>> import nnxlib as nnx
        >>> rngs = nnx.Rngs(0)
        >>> with nnx.split_rngs(rngs, splits=2):
        ...     rngs.default.key.shape
        (2,)
        >>> rngs.default.key.shape
        ()
    """

    def __enter__(self) -> "SplitBackups":
        return self

    def __exit__(self, *exc: Any) -> None:
        _restore(self)


def _restore(backups: Any) -> None:
    for backup in backups:
        stream, key = backup[0], backup[1]
        stream.key.value = key
        if len(backup) == 3:
            stream.count.value = backup[2]


def _selects(only: Any) -> Callable[[tuple, RngStream], bool]:
    """A filter as a test on a stream: it must select both the key and the count."""
    predicate = to_predicate(only)
    return lambda path, s: (predicate((*path, "key"), s.key)
                            and predicate((*path, "count"), s.count))


def _plan(node: Any, decide: Decide, where: str) -> list[tuple[RngStream, Maker]]:
    plan = []
    for path, stream in graphlib.iter_graph(node, graph=True):
        if not isinstance(stream, RngStream):
            continue
        make = decide(path, stream)
        if make is None:
            continue
        shape = jnp.shape(stream.key[...])
        if shape != ():
            raise ValueError(
                f"{where}: the RNG stream at '{'/'.join(map(str, path)) or '<root>'}' "
                f"already holds a stack of keys (shape {shape}), e.g. because it was "
                "created under vmap with split keys; it cannot be split or forked again. "
                "Hint: pass the stacked module to vmap/scan with axis 0 as it is, without "
                "split_rngs."
            )
        plan.append((stream, make))
    return plan


def _in_place(node: Any, decide: Decide, where: str) -> SplitBackups:
    """Give each planned stream its replacement's key and count. The backups restore
    the streams advanced past the key drawn here, so the next draw is a new key."""
    plan = _plan(node, decide, where)
    backups, exact = SplitBackups(), []
    try:
        for stream, make in plan:
            exact.append((stream, stream.key[...], stream.count[...]))
            new = make(stream)
            backups.append((stream, stream.key[...], stream.count[...]))
            stream.key.value = new.key[...]
            stream.count.value = new.count[...]
    except BaseException:
        _restore(exact)
        raise
    return backups


def _copied(node: Any, decide: Decide, where: str, graph: bool) -> Any:
    """A copy of ``node`` sharing its variables, in which each planned stream holds its
    replacement's (new) key and count variables. The draws advance the original's
    counts; its keys stay as they are."""
    graphlib.check_mode(node, graph, where)
    copy = graphlib.clone(node, variables=False, graph=True)
    plan = _plan(copy, decide, where)
    drawn = []
    try:
        for stream, make in plan:
            drawn.append((stream.count, stream.count[...]))
            new = make(stream)
            stream.key, stream.count = new.key, new.count
    except BaseException:
        for count, value in drawn:
            count.value = value
        raise
    return copy


def _rewrite(node: Any, decide: Decide, mode: Mode, where: str) -> Any:
    if mode.updates:
        return _in_place(node, decide, where)
    return _copied(node, decide, where, mode.graph)


def _decorator(decide: Decide, mode: Mode, where: str) -> Callable[[Callable], Callable]:
    """Rewrite the streams in a function's arguments for the duration of each call."""
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if mode.updates:
                with _in_place((args, kwargs), decide, where):
                    return fn(*args, **kwargs)
            args, kwargs = _copied((args, kwargs), decide, where, mode.graph)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def _split_maker(splits: Any, squeeze: bool) -> Maker:
    def make(stream: RngStream) -> RngStream:
        keys = jax.random.split(stream(), splits)
        return RngStream(keys[0] if squeeze else keys, tag=stream.tag)

    return make


def _fork_maker(split: Any) -> Maker:
    def make(stream: RngStream) -> RngStream:
        key = stream()
        return RngStream(key if split is None else jax.random.split(key, split),
                         tag=stream.tag)

    return make


def split_rngs(node: Any = _MISSING, /, *, splits: int | tuple[int, ...], only: Any = ...,
               squeeze: bool = False, graph: bool | None = None,
               graph_updates: bool | None = None) -> Any:
    """Split the keys of the RNG streams in ``node`` into ``splits`` keys each, for
    ``vmap``/``scan`` (each batch member or step gets its own key).

    Each stream ``only`` selects draws one key and is given that key split into
    ``splits`` (``squeeze=True`` with ``splits=1``: the one split key).

    * With graph updates (the default): the streams are changed in place and the call
      returns :class:`SplitBackups`; ``nnx.restore_rngs(backups)`` or leaving a
      ``with`` block puts the single keys back (advanced past the drawn key).
    * With ``graph_updates=False`` or ``graph=False``: ``node`` keeps its keys (its
      counts advance by the draw) and the call returns a copy of ``node`` holding the
      split streams and sharing every other variable.
    * Without ``node``: a decorator that does this to the decorated function's
      arguments for each call.

    Example:
        >>> import nnxlib as nnx
        >>> rngs = nnx.Rngs(params=0, dropout=1)
        >>> with nnx.split_rngs(rngs, splits=5):
        ...     rngs.params.key.shape
        (5,)
        >>> rngs.params.key.shape
        ()
        >>> nnx.split_rngs(rngs, splits=(2, 3), only="params", graph_updates=False).params.key.shape
        (2, 3)
    """
    splits = _check_split(splits, "split_rngs", "splits", required=True)
    if squeeze and splits != 1:
        raise ValueError(f"split_rngs: squeeze=True needs splits=1, got splits={splits!r}. "
                         "Hint: drop squeeze=True to get a stack of keys.")
    selects, make = _selects(only), _split_maker(splits, squeeze)

    def decide(path: tuple, stream: RngStream) -> Maker | None:
        return make if selects(path, stream) else None

    mode = resolve_mode(graph, graph_updates)
    if node is _MISSING:
        return _decorator(decide, mode, "nnx.split_rngs")
    return _rewrite(node, decide, mode, "nnx.split_rngs")


def fork_rngs(node: Any = _MISSING, /, *, split: Any = None, graph: bool | None = None,
              graph_updates: bool | None = None) -> Any:
    """Reseed the RNG streams in ``node`` from one draw of each (``split``: a stack of
    keys split from it).

    ``split`` is ``None`` (every stream gets one new key), a size or shape for every
    stream, or a mapping from stream filters to sizes (``None``: one key); with a
    mapping, the first filter that matches decides and unmatched streams are left
    alone. Graph updates, copies and the decorator form work as in :func:`split_rngs`.

    Example:
        >>> import nnxlib as nnx
        >>> rngs = nnx.Rngs(0)
        >>> old = rngs.default.key[...]
        >>> backups = nnx.fork_rngs(rngs)
        >>> bool(rngs.default.key[...] == old)
        False
        >>> nnx.restore_rngs(backups)
        >>> bool(rngs.default.key[...] == old), int(rngs.default.count[...])
        (True, 1)
    """
    items = split.items() if isinstance(split, Mapping) else [(..., split)]
    rules = [(_selects(f), _fork_maker(_check_split(size, "fork_rngs", "splits")))
             for f, size in items]

    def decide(path: tuple, stream: RngStream) -> Maker | None:
        return next((make for selects, make in rules if selects(path, stream)), None)

    mode = resolve_mode(graph, graph_updates)
    if node is _MISSING:
        return _decorator(decide, mode, "nnx.fork_rngs")
    return _rewrite(node, decide, mode, "nnx.fork_rngs")


def restore_rngs(backups: Any, /) -> None:
    """Put streams back as the backups from :func:`split_rngs` or :func:`fork_rngs`
    (with graph updates) say.

    Example:
        >>> import nnxlib as nnx
        >>> rngs = nnx.Rngs(0)
        >>> backups = nnx.fork_rngs(rngs, split=4)
        >>> rngs.default.key.shape
        (4,)
        >>> nnx.restore_rngs(backups)
        >>> rngs.default.key.shape
        ()
    """
    _restore(backups)


def _scalars_only(path: tuple, key: jax.Array, shape: tuple) -> jax.Array:
    if shape != ():
        raise ValueError(
            f"reseed: the stream at '{'/'.join(map(str, path))}' holds keys of shape "
            f"{shape}, not one key. Hint: pass policy='match_shape' to split the new key "
            "into that shape, or a callable policy(path, key, shape)."
        )
    return key


def _match_shape(path: tuple, key: jax.Array, shape: tuple) -> jax.Array:
    return key if shape == () else jax.random.split(key, shape)


_POLICIES = {"scalars_only": _scalars_only, "match_shape": _match_shape}


def reseed(node: Any, /, *, graph: bool | None = None,
           policy: str | Callable = "scalars_only", **seeds: Any) -> None:
    """Restart the named streams in ``node`` from new seeds (counts back to zero).

    Each stream tagged ``name`` gets the next key of a fresh ``RngStream(seeds[name])``
    (streams sharing a name get successive keys, in graph order), the same keys
    flax.nnx gives. ``policy`` says what to do with a stream holding a stack of keys
    (made by ``split_rngs``/``vmap``): ``"scalars_only"`` (default) raises,
    ``"match_shape"`` splits the new key into that shape, and a callable
    ``policy(path, key, shape)`` returns the keys to use.

    Example:
        >>> import nnxlib as nnx
        >>> model = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
        >>> first = model.rngs.key[...]
        >>> _ = model.rngs()
        >>> nnx.reseed(model, dropout=0)
        >>> bool(model.rngs.key[...] == first), int(model.rngs.count[...])
        (True, 0)
    """
    graphlib.check_mode(node, graph, "nnx.reseed")
    if callable(policy):
        choose = policy
    elif policy in _POLICIES:
        choose = _POLICIES[policy]
    else:
        raise ValueError(
            f"reseed: unknown policy {policy!r}; expected 'scalars_only', 'match_shape' "
            "or a callable (path, key, shape) -> keys."
        )
    sources = {name: RngStream(seed.key[...] if isinstance(seed, RngStream) else seed,
                               tag=name) for name, seed in seeds.items()}
    updates = []  # computed first, so that an error leaves every stream as it was
    for path, stream in graphlib.iter_graph(node, graph=True):
        if isinstance(stream, RngStream) and stream.key.tag in sources:
            key = choose(path, sources[stream.key.tag](), jnp.shape(stream.key[...]))
            updates.append((stream, key))
    for stream, key in updates:
        stream.key.value = key
        stream.count.value = jnp.zeros(jnp.shape(key), jnp.uint32)
