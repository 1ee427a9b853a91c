"""Migrating checkpoints: Linen variables put into an nnxlib model.

Linen training code saves ``{'params': ..., 'batch_stats': ...}`` (sometimes nested once
more, as ``{'params': {'params': ..., ...}}``, when a whole variables dict was stored as
a train state's ``params``). :func:`load_linen_variables` writes such a dict into a model
whose variables are at the same places: a ``ToNNX``-wrapped Linen module, or an nnxlib
model written natively with matching attribute names, Linen's ``layers_0`` matching
nnxlib's ``layers[0]``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import flax.linen as nn
    >>> import nnxlib as nnx
    >>> from bridge import load_linen_variables
    >>> class LinenMLP(nn.Module):
    ...     def setup(self):
    ...         self.layers = [nn.Dense(4), nn.Dense(1)]
    ...     def __call__(self, x):
    ...         return self.layers[1](nn.relu(self.layers[0](x)))
    >>> class MLP(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.layers = [nnx.Linear(2, 4, rngs=rngs), nnx.Linear(4, 1, rngs=rngs)]
    ...     def __call__(self, x):
    ...         return self.layers[1](nnx.relu(self.layers[0](x)))
    >>> x = jnp.ones((3, 2))
    >>> variables = LinenMLP().init(jax.random.key(0), x)
    >>> model = MLP(nnx.Rngs(1))
    >>> load_linen_variables(model, variables)
    >>> bool(jnp.allclose(model(x), LinenMLP().apply(variables, x)))
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import nnxlib
from bridge.linen_in_nnx import ToNNX
from bridge.nnx_in_linen import linen_name
from nnxlib import errors

__all__ = ["load_linen_variables"]


def _flat(tree: Mapping, prefix: tuple = ()) -> dict[tuple, Any]:
    out: dict[tuple, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, prefix + (str(key),)))
        else:
            unboxed = value.unbox() if isinstance(value, nn.meta.AxisMetadata) else value
            out[prefix + (str(key),)] = unboxed
    return out


def _targets(model: Any) -> dict[tuple, tuple[tuple, nnxlib.Variable]]:
    """``(collection, *linen path) -> (nnxlib path, variable)`` for the model's variables
    (random-stream state is not part of Linen checkpoints and is left out)."""
    for path, node in nnxlib.iter_graph(model, graph=True):
        if isinstance(node, ToNNX) and node.linen_collections is None:
            raise errors.LazyInitError(
                f"load_linen_variables: {errors.format_path(path, root='model')} is a ToNNX "
                "wrapper that has no variables yet. Expected an initialised model. Hint: "
                "call lazy_init(model, sample_input) (or nnx.eval_shape of it) first."
            )
    targets = {}
    for path, variable in nnxlib.to_flat_state(nnxlib.state(model, graph=True)):
        if not isinstance(variable, nnxlib.Variable) or isinstance(variable, nnxlib.RngState):
            continue
        col = nnxlib.variable_name_from_type(type(variable), allow_register=True)
        targets[(col, *linen_name(path))] = (path, variable)
    return targets


def _shape_of(x: Any) -> tuple | None:
    shape = getattr(x, "shape", None)
    return None if shape is None else tuple(shape)


def _problems(targets: dict, flat: dict, strict: bool) -> list[str]:
    problems = []
    for key in sorted(set(flat) - set(targets)):
        problems.append(f"{'/'.join(key)} is in the variables but not in the model")
    if strict:
        for key in sorted(set(targets) - set(flat)):
            path = errors.format_path(targets[key][0], root="model")
            problems.append(f"{path} ({'/'.join(key)}) is in the model but not in the variables")
    for key in sorted(set(flat) & set(targets)):
        path, variable = targets[key]
        old, new = _shape_of(variable.get_value()), _shape_of(flat[key])
        where = f"{errors.format_path(path, root='model')} ({'/'.join(key)})"
        if old is not None and new is not None and old != new:
            problems.append(f"{where}: shape {new} in the variables, {old} in the model")
        old_dtype = getattr(variable.get_value(), "dtype", None)
        new_dtype = getattr(flat[key], "dtype", None)
        if old_dtype is not None and new_dtype is not None and old_dtype != new_dtype:
            problems.append(f"{where}: dtype {new_dtype} in the variables, {old_dtype} in "
                            "the model (cast the variables first)")
    return problems


def _unwrapped(variables: Mapping) -> Mapping | None:
    """The inner dict of the ``{'params': {'params': ...}}`` nesting, if that is the form."""
    inner = variables.get("params") if set(variables) == {"params"} else None
    if isinstance(inner, Mapping) and isinstance(inner.get("params"), Mapping):
        return inner
    return None


def load_linen_variables(model: Any, variables: Mapping[str, Any], *,
                         strict: bool = True) -> None:
    """Write Linen variables (``{'params': ..., 'batch_stats': ...}``) into ``model``.

    Each Linen variable goes to the model variable of the same collection (its kind) and
    path, where Linen's ``name_<i>`` stands for a list item ``name[i]``. The
    ``{'params': {'params': ...}}`` nesting is recognised. Values keep the placement
    (sharding) of the arrays they replace; box metadata in the variables is not
    copied (the model's own metadata stays).

    With ``strict=True`` every model variable (random-stream state aside) must get a
    value; ``strict=False`` leaves those the variables lack as they are. On any
    mismatch (a path on one side only, a different shape) nothing is written and a
    :class:`~nnxlib.errors.StateMismatchError` lists every mismatched path.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import flax.linen as nn
        >>> import nnxlib as nnx
        >>> from bridge import ToNNX, load_linen_variables
        >>> model = ToNNX(nn.Dense(2), rngs=nnx.Rngs(0)).lazy_init(jnp.ones((1, 3)))
        >>> saved = nn.Dense(2).init(jax.random.key(7), jnp.ones((1, 3)))
        >>> load_linen_variables(model, {"params": saved})    # the nested form
        >>> bool((model.kernel[...] == saved["params"]["kernel"]).all())
        True
    """
    if not isinstance(variables, Mapping):
        raise TypeError(
            f"load_linen_variables: expected a mapping of Linen collections, got "
            f"{type(variables).__name__}. Hint: pass what Linen's init returned (or the "
            "restored checkpoint dict), e.g. {'params': ..., 'batch_stats': ...}."
        )
    targets = _targets(model)
    candidates = [variables]
    inner = _unwrapped(variables)
    if inner is not None:
        candidates.insert(0, inner)
    best = None
    for candidate in candidates:
        flat = _flat(candidate)
        problems = _problems(targets, flat, strict)
        if not problems:
            best = flat
            break
        if best is None:
            first_problems = problems
    if best is None:
        shown = "\n  ".join(first_problems[:20])
        more = f"\n  ... and {len(first_problems) - 20} more" if len(first_problems) > 20 else ""
        raise errors.StateMismatchError(
            f"load_linen_variables: the variables do not fit the model "
            f"({len(first_problems)} mismatch(es)); nothing was written:\n  {shown}{more}\n"
            "Hint: the model's attribute paths must match the Linen module's names "
            "(layers_0 <-> layers[0]); pass strict=False to leave model variables the "
            "checkpoint lacks unchanged."
        )
    for key, value in best.items():
        _, variable = targets[key]
        sharding = getattr(variable.get_value(), "sharding", None)
        new = jnp.asarray(value)
        variable.set_value(jax.device_put(new, sharding) if sharding is not None else new)
