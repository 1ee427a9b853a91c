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

import contextlib
import functools
import math
import operator
from collections.abc import Mapping
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp

from nnxlib import graph as graphlib
from nnxlib._rng_sampling import RandomSamplers
from nnxlib.errors import InvalidArgumentError, MissingRngStreamAttributeError
from nnxlib.filters import to_predicate
from nnxlib.module import Object
from nnxlib.variables import A, Variable

__all__ = ["RngState", "RngKey", "RngCount", "RngStream", "Rngs", "split_rngs", "fork_rngs",
           "restore_rngs",
           "reseed"]


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
        key = jax.random.fold_in(self.key[...], self.count[...])
        self.count[...] = self.count[...] + 1
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
        """A new stream holding this stream's next key repeated to shape ``k``.

        Example:
            >>> import nnxlib as nnx
            >>> keys = nnx.RngStream(0, tag="a").broadcast(3).key[...]
            >>> keys.shape, bool((keys[0] == keys[2]))
            ((3,), True)
        """
        shape = (k,) if isinstance(k, int) else tuple(k)
        return RngStream(jnp.broadcast_to(self(), shape), tag=self.tag)


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
            f"No RNG stream named {name!r} and no 'default' stream to fall back to; "
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
        shape, or a dict from stream filters to sizes (``None``: not split).

        Example:
            >>> import nnxlib as nnx
            >>> new = nnx.Rngs(params=0, dropout=1).split({"params": 4, ...: None})
            >>> new.params.key.shape, new.dropout.key.shape
            ((4,), ())
        """
        return self.fork(split=k)

    def broadcast(self, k: Any) -> "Rngs":
        """A new ``Rngs`` whose streams hold their next key repeated to shape ``k``
        (a size, a shape, or a dict from stream filters to shapes, ``None``: as is).

        Example:
            >>> import nnxlib as nnx
            >>> nnx.Rngs(0).broadcast(5).default.key.shape
            (5,)
        """
        streams = {}
        for name, stream in self.items():
            size = _split_size_for(name, stream, k)
            streams[name] = stream.fork() if size is None else stream.broadcast(size)
        return Rngs(**streams)


def _check_split(split: Any, where: str, what: str) -> Any:
    """``split`` as ``None``, an int or a tuple of ints, each at least 1; raise
    :class:`InvalidArgumentError` otherwise (nothing has been drawn yet)."""
    if split is None:
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
    if not isinstance(split, dict):
        return split
    for f, size in split.items():
        if to_predicate(f)((name,), stream.key):
            return size
    return None


def _streams(node: Any, only: Any) -> list[tuple[tuple, RngStream]]:
    predicate = to_predicate(only)
    return [(path, s) for path, s in graphlib.iter_graph(node, graph=True)
            if isinstance(s, RngStream) and predicate(path, s.key)]


def _redraw(node: Any, only: Any, splits: Any, where: str, *, keep_draw: bool,
            squeeze: bool = False) -> list:
    """Draw a key from each stream of ``node`` matching ``only`` and make it (split into
    ``splits`` keys, when given) the stream's new key, count zero.

    Returns the backups for :func:`_restore`: with ``keep_draw`` they restore the stream
    advanced past the key drawn here (``split_rngs``: the next draw differs), otherwise
    exactly as it was. On an error every stream is left as it was.
    """
    splits = _check_split(splits, where, "splits")  # before any stream advances
    backup: list = []
    exact: list = []  # restores on an error, draws included
    try:
        for path, stream in _streams(node, only):
            old_key = stream.key[...]
            if jnp.ndim(old_key) != 0:
                raise ValueError(
                    f"{where}: the RNG stream at '{'/'.join(map(str, path)) or '<root>'}' "
                    f"already holds a stack of keys (shape {jnp.shape(old_key)}), e.g. "
                    "because it was created under vmap with split keys; it cannot be "
                    "split again. Hint: pass the stacked module to vmap/scan with axis 0 "
                    "as it is, without split_rngs."
                )
            old_count = stream.count[...]
            exact.append((stream, old_key, old_count))
            key = stream()
            backup.append((stream, old_key, stream.count[...] if keep_draw else old_count))
            if splits is not None:
                key = jax.random.split(key, splits)
                if squeeze:  # splits == 1: the one split key, as flax draws it
                    key = key[0]
            stream.key.value = key
            stream.count.value = jnp.zeros(jnp.shape(key), jnp.uint32)
    except BaseException:
        _restore(exact)
        raise
    return backup


class split_rngs(contextlib.ContextDecorator):
    """Split the keys of RNG streams into ``splits`` keys, restoring them afterwards.

    Use it around ``vmap``/``scan`` so each batch member or step gets its own key. As a
    decorator it splits the streams found in the decorated function's arguments.

    Example:
        >>> import nnxlib as nnx
        >>> rngs = nnx.Rngs(0)
        >>> with nnx.split_rngs(rngs, splits=5):
        ...     rngs.default.key.shape
        (5,)
        >>> rngs.default.key.shape
        ()
    """

    def __init__(self, node: Any = None, /, *, splits: int | tuple[int, ...], only: Any = ...,
                 squeeze: bool = False, graph: bool | None = None,
                 graph_updates: bool | None = None):
        self.graph = graph
        self.node = node
        self.splits = _check_split(splits, "split_rngs", "splits")
        self.only = only
        self.squeeze = squeeze
        self._backups: list = []

    def __enter__(self) -> Any:
        graphlib.check_mode(self.node, self.graph, "nnx.split_rngs")
        self._backups.append(_split(self.node, self.splits, self.only, self.squeeze))
        return self.node

    def __exit__(self, *exc: Any) -> None:
        _restore(self._backups.pop())

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nodes = [x for x in jax.tree_util.tree_leaves((args, kwargs),
                                                          is_leaf=graphlib.is_graph_node)
                     if graphlib.is_graph_node(x)]
            graphlib.check_mode(tuple(nodes), self.graph, "nnx.split_rngs")
            backups = [_split(n, self.splits, self.only, self.squeeze) for n in nodes]
            try:
                return fn(*args, **kwargs)
            finally:
                for backup in reversed(backups):
                    _restore(backup)

        return wrapper


def _split(node: Any, splits: Any, only: Any, squeeze: bool) -> list:
    if squeeze and splits != 1:
        raise ValueError(f"split_rngs: squeeze=True needs splits=1, got splits={splits!r}. "
                         "Hint: drop squeeze=True to get a stack of keys.")
    return _redraw(node, only, splits, "split_rngs", keep_draw=True, squeeze=squeeze)


def _restore(backup: list) -> None:
    for stream, key, count in backup:
        stream.key.value = key
        stream.count.value = count


def fork_rngs(node: Any, /, *, split: Any = None, graph: bool | None = None,
              graph_updates: bool | None = None) -> list:
    """Advance every stream in ``node`` once and reseed it from the drawn key.

    Returns the backups that ``restore_rngs`` accepts.

    Example:
        >>> import nnxlib as nnx
        >>> rngs = nnx.Rngs(0)
        >>> old = rngs.default.key[...]
        >>> _ = nnx.fork_rngs(rngs)
        >>> bool(rngs.default.key[...] == old)
        False
    """
    graphlib.check_mode(node, graph, "nnx.fork_rngs")
    return _redraw(node, ..., split, "fork_rngs", keep_draw=False)


def restore_rngs(backups: list, /) -> None:
    """Put streams back as the backups from :func:`fork_rngs` (or ``split_rngs``) say.

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


def reseed(node: Any, /, *, graph: bool | None = None,
           policy: str | Callable = "scalars_only", **seeds: Any) -> None:
    """Reset the named streams in ``node`` to new seeds (counts back to zero).

    ``policy`` says what to do with a stream holding a stack of keys (made by
    ``split_rngs``/``vmap``): ``"scalars_only"`` (default) raises, ``"match_shape"``
    splits the new key into that shape, and a callable ``policy(path, key, shape)``
    returns the keys to use.

    Example:
        >>> import nnxlib as nnx
        >>> rngs = nnx.Rngs(0)
        >>> first = rngs()
        >>> nnx.reseed(rngs, default=0)
        >>> bool((rngs() == first))
        True
    """
    graphlib.check_mode(node, graph, "nnx.reseed")
    if not callable(policy) and policy not in ("scalars_only", "match_shape"):
        raise ValueError(
            f"reseed: unknown policy {policy!r}; expected 'scalars_only', 'match_shape' "
            "or a callable (path, key, shape) -> keys."
        )
    updates = []  # computed first, so that an error leaves every stream as it was
    for path, stream in _streams(node, ...):
        if stream.tag not in seeds:
            continue
        key = _as_key(seeds[stream.tag])
        shape = jnp.shape(stream.key[...])
        if shape != ():
            if callable(policy):
                key = policy(path, key, shape)
            elif policy == "match_shape":
                key = jax.random.split(key, math.prod(shape)).reshape(shape)
            else:
                raise ValueError(
                    f"reseed: the stream at '{'/'.join(map(str, path))}' holds keys of "
                    f"shape {shape}, not one key. Hint: pass policy='match_shape' to "
                    "split the new key into that shape."
                )
        updates.append((stream, key))
    for stream, key in updates:
        stream.key.value = key
        stream.count.value = jnp.zeros(jnp.shape(key), jnp.uint32)
