"""RNG helpers with flax.nnx 0.12 names: ``with_rngs``, ``backup_keys``,
``SplitBackups``.

Example:
    >>> import nnxlib as nnx
    >>> rngs = nnx.Rngs(params=0, dropout=1)
    >>> new = nnx.with_rngs(rngs, split={"params": 4}, fork=...)
    >>> new.params.key.shape, new.dropout.key.shape
    ((4,), ())
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

from nnxlib.filters import to_predicate
from nnxlib.graph import clone, iter_graph
from nnxlib.rngs import RngStream, _restore

__all__ = ["with_rngs", "backup_keys", "SplitBackups"]


class SplitBackups(list):
    """Saved ``(stream, key, count)`` triples; ``nnx.restore_rngs`` puts them back,
    and so does leaving a ``with`` block.

    Example:
        >>> import nnxlib as nnx
        >>> rngs = nnx.Rngs(0)
        >>> with nnx.rnglib.backup_keys(rngs):
        ...     _ = rngs()
        >>> int(rngs.default.count[...])
        0
    """

    def __enter__(self) -> "SplitBackups":
        return self

    def __exit__(self, *exc: Any) -> None:
        _restore(self)


def backup_keys(node: Any, /, *, graph: bool | None = None) -> SplitBackups:
    """Save the key and count of every RNG stream in ``node``.

    Example:
        >>> import nnxlib as nnx
        >>> rngs = nnx.Rngs(0)
        >>> backups = nnx.rnglib.backup_keys(rngs)
        >>> _ = rngs(), rngs()
        >>> nnx.restore_rngs(backups); int(rngs.default.count[...])
        0
    """
    return SplitBackups((s, s.key[...], s.count[...]) for _, s in iter_graph(node, graph=graph)
                        if isinstance(s, RngStream))


def _rule(rules: Any, path: tuple, stream: RngStream) -> Any:
    """The first value in ``rules`` (a size/shape for every stream, or a mapping from
    filters) whose filter matches the stream; ``None`` if none does."""
    if rules is None:
        return None
    if not isinstance(rules, Mapping):
        return rules
    for f, value in rules.items():
        if to_predicate(f)(path, stream.key):
            return value
    return None


def with_rngs(node: Any = None, /, *, split: Any = None, fork: Any = None,
              broadcast: Any = None, only: Any = True, graph: bool | None = None,
              graph_updates: bool | None = None) -> Any:
    """A copy of ``node`` whose RNG streams are split, broadcast or forked.

    For each stream matching ``only``: if ``split`` gives it a shape (an int/shape for
    all streams, or a mapping from filters), the copy holds that many keys split from
    its next key; else if ``broadcast`` gives it a shape, the next key repeated; else if
    it matches ``fork`` (a filter or a list of filters), a fresh key drawn from it. Other
    streams are copied unchanged. Each stream used advances, as a draw does.
    ``with_rngs(split=...)`` without ``node`` is a decorator-style partial.

    Example:
        >>> import nnxlib as nnx
        >>> rngs = nnx.Rngs(params=0, noise=2)
        >>> new = nnx.with_rngs(rngs, split={"params": 4, ...: (2, 4)})
        >>> new.params.key.shape, new.noise.key.shape
        ((4,), (2, 4))
        >>> nnx.with_rngs(rngs, broadcast=3).noise.key.shape
        (3,)
    """
    if node is None:
        return lambda n: with_rngs(n, split=split, fork=fork, broadcast=broadcast,
                                   only=only)
    select = to_predicate(only)
    forks = to_predicate(list(fork) if isinstance(fork, (list, tuple)) else fork)
    originals = {path: s for path, s in iter_graph(node, graph=graph)
                 if isinstance(s, RngStream)}
    copy = clone(node, graph=True)
    for path, target in iter_graph(copy, graph=True):
        if not isinstance(target, RngStream):
            continue
        source = originals[path]
        if not select(path, source.key):
            continue
        size = _rule(split, path, source)
        if size is not None:
            new = source.split(size)
        elif (shape := _rule(broadcast, path, source)) is not None:
            new = source.broadcast(shape)
        elif fork is not None and forks(path, source.key):
            new = source.fork()
        else:
            continue
        target.key.value = new.key[...]
        target.count.value = jnp.zeros(jnp.shape(new.key[...]), jnp.uint32)
    return copy
