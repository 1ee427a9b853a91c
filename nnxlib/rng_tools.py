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

from collections.abc import Mapping, Sequence
from typing import Any

from nnxlib.graph import iter_graph
from nnxlib.graph.mode import Mode, resolve_graph
from nnxlib.rngs import (
    _MISSING,
    Maker,
    RngStream,
    SplitBackups,
    _check_split,
    _copied,
    _decorator,
    _fork_maker,
    _selects,
    _split_maker,
)

__all__ = ["with_rngs", "backup_keys", "SplitBackups"]


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


def _broadcast_maker(shape: Any) -> Maker:
    return lambda stream: stream.broadcast(shape)


def _sized_rules(rules: Any, what: str, maker: Any) -> list:
    """``(filter, selects, make)`` for a size/shape for every stream or a mapping from
    filters to sizes (``None``: the rule does not apply)."""
    items = rules.items() if isinstance(rules, Mapping) else [(..., rules)]
    return [(f, _selects(f), maker(_check_split(size, "with_rngs", what)))
            for f, size in items if size is not None]


def with_rngs(node: Any = _MISSING, /, *, split: Any = None, fork: Any = None,
              broadcast: Any = None, only: Any = True, graph: bool | None = None,
              graph_updates: bool | None = None) -> Any:
    """A copy of ``node`` whose RNG streams are split, broadcast or forked.

    Each stream that ``only`` selects is matched against the rules: ``split`` and
    ``broadcast`` (a size/shape for every stream, or a mapping from filters to sizes,
    the first matching filter wins) and ``fork`` (a filter or a sequence of filters).
    The copy's stream holds keys split from the stream's next key, that key repeated,
    or a new key drawn from it, in that order of precedence; a stream no rule matches is
    carried over unchanged. A stream matched by two rules through specific filters
    (not ``...``/``True``) is ambiguous and raises ``ValueError``.

    The copy shares every other variable with ``node``; ``node``'s streams advance by
    the keys drawn but keep their keys. Without ``node`` it is a decorator that passes
    such copies of the arguments to the decorated function. ``graph_updates`` is
    accepted as in flax.nnx; the result is a copy either way.

    Example:
        >>> import nnxlib as nnx
        >>> rngs = nnx.Rngs(params=0, noise=2)
        >>> new = nnx.with_rngs(rngs, split={"params": 4, ...: (2, 4)})
        >>> new.params.key.shape, new.noise.key.shape
        ((4,), (2, 4))
        >>> nnx.with_rngs(rngs, broadcast=3).noise.key.shape
        (3,)
    """
    forks = [] if fork is None else (
        list(fork) if isinstance(fork, Sequence) and not isinstance(fork, str) else [fork])
    rules = (("split", _sized_rules(split, "split", lambda n: _split_maker(n, False))),
             ("broadcast", _sized_rules(broadcast, "broadcast", _broadcast_maker)),
             ("fork", [(f, _selects(f), _fork_maker(None)) for f in forks]))
    selected = _selects(only)

    def decide(path: tuple, stream: RngStream) -> Maker | None:
        if not selected(path, stream):
            return None
        matches = {}
        for kind, kind_rules in rules:
            for f, selects, make in kind_rules:
                if selects(path, stream):
                    matches[kind] = (f, make)
                    break
        specific = [f"{kind} (filter {f!r})" for kind, (f, _) in matches.items()
                    if f is not Ellipsis and f is not True]
        if len(specific) > 1:
            raise ValueError(
                f"with_rngs: the RNG stream at '{'/'.join(map(str, path)) or '<root>'}' "
                f"matches multiple rules: {', '.join(specific)}. Hint: give each stream "
                "to one of split/broadcast/fork, e.g. fork=nnx.Not('params') next to "
                "split={'params': 4}."
            )
        return next(iter(matches.values()))[1] if matches else None

    mode = Mode(resolve_graph(graph), False)
    if node is _MISSING:
        return _decorator(decide, mode, "nnx.with_rngs")
    return _copied(node, decide, "nnx.with_rngs", mode.graph)
