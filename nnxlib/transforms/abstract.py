"""Abstract models that know their shardings: plan placement before spending memory.

``get_abstract_model`` runs a model constructor under ``eval_shape`` on a mesh and
returns its graph definition plus a state of ``jax.ShapeDtypeStruct`` s, each carrying
the ``NamedSharding`` its variable's metadata asks for. That state is what sharded
creation (``nnx.jit(..., out_shardings=...)``) and checkpoint restores need.

Example:
    >>> import jax
    >>> import nnxlib as nnx
    >>> mesh = jax.make_mesh((2, 4), ("data", "model"))
    >>> init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
    >>> graphdef, abstract = nnx.get_abstract_model(
    ...     lambda: nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0)), mesh)
    >>> abstract["kernel"].value.shape, abstract["kernel"].value.sharding.spec
    ((4, 8), P(None, 'model'))
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from nnxlib import graph as graphlib
from nnxlib.spmd import get_named_sharding, variable_spec
from nnxlib.state import State, map_state
from nnxlib.transforms.eval_shape import eval_shape
from nnxlib.variables import Variable, _placement

__all__ = ["get_abstract_model", "as_abstract", "abstract_with_sharding"]


def get_abstract_model(init_fn: Callable[[], Any], mesh: jax.sharding.Mesh, *,
                       graph: bool | None = None) -> tuple:
    """``(graphdef, abstract_state)`` of the model ``init_fn()`` builds, on ``mesh``.

    Nothing is computed or allocated. Each leaf of the state is a ``ShapeDtypeStruct``
    with the ``NamedSharding`` of its variable's metadata (resolved with the active
    ``logical_axis_rules``). ``graph=False`` (tree mode) requires a model without shared
    references.

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> mesh = jax.make_mesh((8,), ("model",))
        >>> init = nnx.with_partitioning(nnx.initializers.ones, ("model", None))
        >>> _, abstract = nnx.get_abstract_model(
        ...     lambda: nnx.Linear(16, 2, kernel_init=init, rngs=nnx.Rngs(0)), mesh)
        >>> abstract["kernel"].value.sharding.shard_shape((16, 2))
        (2, 2)
    """
    with jax.set_mesh(mesh):
        abstract_model = eval_shape(init_fn)
        graphdef, state = graphlib.split(abstract_model, graph=graph)
        shardings = get_named_sharding(state, mesh)

    def with_sharding(path: tuple, var: Any) -> Any:
        sharding = _lookup(shardings, path)
        value = var.get_value() if isinstance(var, Variable) else var
        abstract = jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding)
        return var.replace(abstract) if isinstance(var, Variable) else abstract

    return graphdef, map_state(with_sharding, state)


def _lookup(state: Any, path: tuple) -> Any:
    node = state
    for key in path:
        node = node[key]
    return node.get_value() if isinstance(node, Variable) else node


def as_abstract(tree: Any, graph: bool | None = None) -> Any:
    """Give the abstract variables of ``tree`` the sharding their metadata asks for.

    ``tree`` is an abstract module (from ``nnx.eval_shape``) or a ``State`` of one. Each
    variable holding a ``ShapeDtypeStruct`` without a sharding, whose metadata names one,
    gets a ``ShapeDtypeStruct`` with a ``NamedSharding`` on its ``mesh`` metadata or the
    mesh of ``jax.set_mesh``. A new tree is returned; ``tree`` is not changed.

    Example:
        >>> import jax
        >>> import nnxlib as nnx
        >>> mesh = jax.make_mesh((2, 4), ("a", "b"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
        >>> meta = {"out_sharding": ("a", "b")}
        >>> with jax.set_mesh(mesh):
        ...     abstract = nnx.eval_shape(
        ...         lambda: nnx.Linear(4, 8, kernel_metadata=meta, rngs=nnx.Rngs(0)))
        ...     abstract = nnx.as_abstract(abstract)
        >>> abstract.kernel.value.sharding.spec
        P('a', 'b')
    """
    def add_sharding(path: tuple, var: Any) -> Any:
        if not isinstance(var, Variable):
            return var
        value = var.get_value()
        if not (isinstance(value, jax.ShapeDtypeStruct) and value.sharding is None):
            return var
        if _placement.raw_sharding(var.get_metadata(exclude_required=True)) is None:
            return var
        mesh = var.get_metadata("mesh", None) or _placement.context_mesh()
        if mesh is None:
            return var
        spec = variable_spec(var, path, mesh)
        sharding = jax.sharding.NamedSharding(mesh, spec)
        return var.replace(jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding))

    if isinstance(tree, State):
        return map_state(add_sharding, tree)
    return graphlib.map_node(add_sharding, tree, graph=graph)


#: flax.nnx's earlier name for :func:`as_abstract`.
abstract_with_sharding = as_abstract
