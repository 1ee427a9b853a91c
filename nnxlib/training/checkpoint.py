"""Checkpoints of module state with orbax-checkpoint, checked before anything is changed.

orbax does the writing and reading (``StandardCheckpointer`` here; the same pure dicts
work with ``CheckpointManager`` and ``ocp.args.StandardSave/StandardRestore``). This
file only saves users the lines that come back every time:

- :func:`checkpoint_target`: the pure dict of ``ShapeDtypeStruct`` s (with shardings) to
  restore into, from a live or abstract (``nnx.eval_shape``) model or state;
- :func:`compare_structure`: every path that is missing, unexpected, or of another shape
  or dtype, in one list;
- :func:`save_checkpoint` / :func:`restore_checkpoint`: both steps around orbax, and
  ``nnx.update`` of the model only once the checkpoint is known to fit.

orbax is imported here, lazily (``import nnxlib`` never imports it). Typed PRNG keys
(``Rngs`` state) are stored as their raw key data and rebuilt on restore.

Example:
    >>> import tempfile, jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> path = tempfile.mkdtemp() + "/step_1"
    >>> nnx.training.save_checkpoint(path, model)
    >>> fresh = nnx.Linear(2, 3, rngs=nnx.Rngs(1))
    >>> _ = nnx.training.restore_checkpoint(path, fresh)
    >>> bool(jnp.all(fresh.kernel[...] == model.kernel[...]))
    True
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from nnxlib import graph as graphlib
from nnxlib.errors import StateMismatchError, format_path
from nnxlib.state import State, from_flat_state, to_flat_state, to_pure_dict

__all__ = ["checkpoint_target", "compare_structure", "save_checkpoint",
           "restore_checkpoint", "to_checkpoint_dict"]


def _state_of(node: Any) -> State:
    return node if isinstance(node, State) else graphlib.state(node, graph=True)


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def to_checkpoint_dict(node: Any) -> dict:
    """The pure dict orbax saves for ``node`` (a module or a ``State``).

    Typed PRNG keys are replaced by their key data (orbax stores plain arrays).

    Example:
        >>> import nnxlib as nnx
        >>> d = nnx.training.to_checkpoint_dict(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        >>> sorted(d), d["kernel"].shape
        (['bias', 'kernel'], (2, 3))
    """
    pure = to_pure_dict(_state_of(node))
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, pure)


def _abstract(x: Any) -> Any:
    sharding = getattr(x, "sharding", None)
    if _is_key(x):  # stored as key data: the same sharding, one more (replicated) axis
        x = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def checkpoint_target(node: Any, shardings: Any = None) -> dict:
    """Pure dict of ``ShapeDtypeStruct`` s to restore ``node``'s state into.

    ``node`` is a live or abstract module (``nnx.eval_shape``) or a ``State``. Each entry
    keeps its array's sharding, or takes the one from ``shardings`` (a State of
    shardings, e.g. ``nnx.get_named_sharding(state, mesh)``) when given: that is how a
    checkpoint is restored onto another mesh.

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> abstract = nnx.eval_shape(lambda: nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        >>> nnx.training.checkpoint_target(abstract)["kernel"].shape
        (2, 3)
    """
    state = _state_of(node)
    target = jax.tree.map(_abstract, to_pure_dict(state))
    if shardings is None:
        return target
    by_path = dict(to_flat_state(shardings))
    flat = to_flat_state(State(target))
    placed = []
    for path, leaf in flat:
        sharding = by_path.get(path)
        sharding = getattr(sharding, "value", sharding)
        placed.append((path, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                  sharding=sharding or leaf.sharding)))
    return to_pure_dict(from_flat_state(placed))


def _flat(tree: Any) -> dict:
    """``{path with str keys: leaf}`` of a nested dict (orbax stringifies int keys)."""
    out: dict = {}

    def walk(node: Any, path: tuple) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        else:
            out[tuple(map(str, path))] = (path, node)

    walk(tree, ())
    return out


def compare_structure(expected: Any, found: Any, what: str = "checkpoint") -> list[str]:
    """Every difference between two pure dicts of arrays (or shape/dtype structs).

    Returns one line per path: missing from ``found``, unexpected in it, or of another
    shape or dtype. An empty list means ``found`` fits ``expected``.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> nnx.training.compare_structure({"a": jnp.zeros(2), "b": jnp.zeros(1)},
        ...                                {"a": jnp.zeros(3)})
        ['a: shape (2,) expected, (3,) in the checkpoint', 'b: missing from the checkpoint']
    """
    want, have = _flat(expected), _flat(found)
    problems = []
    for key in sorted(set(want) | set(have)):
        if key not in have:
            problems.append(f"{format_path(want[key][0])}: missing from the {what}")
            continue
        if key not in want:
            problems.append(f"{format_path(have[key][0])}: in the {what} but not in the model")
            continue
        path, a = want[key]
        b = have[key][1]
        shape_a, shape_b = tuple(np.shape(a)), tuple(getattr(b, "shape", np.shape(b)))
        if shape_a != shape_b:
            problems.append(f"{format_path(path)}: shape {shape_a} expected, {shape_b} "
                            f"in the {what}")
        elif np.dtype(a.dtype) != np.dtype(b.dtype):
            problems.append(f"{format_path(path)}: dtype {a.dtype} expected, {b.dtype} "
                            f"in the {what}")
    return problems


def save_checkpoint(path: str | os.PathLike, node: Any, *, force: bool = False) -> None:
    """Write ``node``'s state (a module or a ``State``) to ``path`` with orbax.

    Blocks until the checkpoint is complete. ``force`` overwrites an existing one.

    Example:
        >>> import os, tempfile
        >>> import nnxlib as nnx
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> nnx.training.save_checkpoint(path, nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
        >>> os.path.isdir(path)
        True
    """
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(path), to_checkpoint_dict(node), force=force)
    checkpointer.wait_until_finished()


def restore_checkpoint(path: str | os.PathLike, node: Any, *, shardings: Any = None,
                       partial: bool = False) -> State:
    """Read the checkpoint at ``path`` into ``node`` and return the restored ``State``.

    ``node`` is a live module (updated in place), an abstract one (only the returned
    state is meaningful: ``nnx.merge(graphdef, state)`` builds the model), or a
    ``State``. Arrays are read straight into their target shardings: the node's own,
    or ``shardings`` (e.g. ``nnx.get_named_sharding(state, other_mesh)``).

    The checkpoint's structure is checked first: if a path is missing, unexpected, or
    of another shape or dtype, :class:`~nnxlib.errors.StateMismatchError` lists them all
    and nothing is read or changed. ``partial=True`` accepts a checkpoint that lacks
    some of the node's entries (one written before a layer was added): those keep
    their current values.

    Example:
        >>> import os, tempfile
        >>> import nnxlib as nnx
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> nnx.training.save_checkpoint(path, nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
        >>> try:
        ...     nnx.training.restore_checkpoint(path, nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
        ... except nnx.errors.StateMismatchError as e:
        ...     print(str(e).splitlines()[1])
          kernel: shape (3, 2) expected, (2, 2) in the checkpoint
    """
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    state = _state_of(node)
    target = checkpoint_target(state, shardings)
    checkpointer = ocp.StandardCheckpointer()
    stored = checkpointer.metadata(path).item_metadata.tree
    problems = compare_structure(target, stored)
    if partial:
        problems = [p for p in problems if not p.endswith("missing from the checkpoint")]
    if problems:
        raise StateMismatchError(
            f"The checkpoint at {path} does not fit the model; {len(problems)} "
            "mismatched path(s):\n  " + "\n  ".join(problems) + "\nNothing was changed. "
            "Hint: restore into the model the checkpoint was written from; pass "
            "partial=True if the model only gained entries since."
        )
    if partial:
        present = _flat(stored)
        target = _keep(target, present)
    restored = checkpointer.restore(path, target)
    return _apply(node, state, restored)


def _keep(target: dict, present: dict) -> dict:
    out: dict = {}
    for key, (path, leaf) in _flat(target).items():
        if key in present:
            node = out
            for k in path[:-1]:
                node = node.setdefault(k, {})
            node[path[-1]] = leaf
    return out


def _apply(node: Any, state: State, restored: dict) -> State:
    """Write restored arrays into a copy of ``state`` (and into ``node`` if it is live)."""
    current = dict(to_flat_state(state))
    by_key = {tuple(map(str, p)): p for p in current}
    flat = {}
    for key, (_, value) in _flat(restored).items():
        target = by_key[key]
        old = current[target]
        raw = old.get_value() if hasattr(old, "get_value") else old
        if _is_key(raw):
            value = jax.random.wrap_key_data(value, impl=raw.dtype._impl)
        flat[target] = old.replace(value) if hasattr(old, "replace") else value
    new_state = from_flat_state({**current, **flat}.items())
    if not isinstance(node, State):
        graphlib.update(node, from_flat_state(flat.items()))
    return new_state
