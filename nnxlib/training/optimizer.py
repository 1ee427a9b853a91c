"""``Optimizer``: optax optimizer state held as nnxlib variables.

The optimizer does not own the model. It keeps the optax state for the variables of a
model that match ``wrt`` (``Param`` by default) and applies gradients to them:

>>> import jax, jax.numpy as jnp, optax
>>> import nnxlib as nnx
>>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
>>> optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
>>> grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
>>> old = model.bias[...]
>>> _ = optimizer.update(model, grads)
>>> model.bias[...] - old, optimizer.step[...]
(Array([-0.1], dtype=float32), Array(1, dtype=uint32))

Storage layout. optax states are trees of tuples and named tuples whose parameter-shaped
parts have the structure of the parameters (here: an ``nnx.State``). Each array leaf is
kept in an :class:`OptState` variable inside nested ``nnx.Dict`` s keyed like the paths
``flax.nnx`` uses (tuple index, then named-tuple field, then parameter path, e.g.
``opt_state[0]['mu']['kernel']``), so checkpoints line up with flax's. The optax tree
shape itself is recorded once, statically, and the optax state is rebuilt from the
variables on each update.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from nnxlib import graph as graphlib
from nnxlib.errors import InvalidFilterError, format_path
from nnxlib.filters import to_predicate
from nnxlib.module import Object
from nnxlib.state import State, from_flat_state, to_flat_state
from nnxlib.variables import A, Param, Variable

__all__ = ["Optimizer", "ModelAndOptimizer", "OptState", "OptArray", "OptVariable"]


class OptState(Variable[A]):
    """Any optimizer state (the step counter, moments, …).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> isinstance(nnx.OptState(jnp.zeros(())), nnx.Variable)
        True
    """


class OptArray(OptState):
    """Optimizer state not shaped like a parameter (e.g. adam's ``count``).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> issubclass(nnx.OptArray, nnx.OptState)
        True
    """


class OptVariable(OptState):
    """Optimizer state shaped like a parameter; it carries the parameter's metadata.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import nnxlib as nnx
        >>> meta = {"out_sharding": (None, "mlp")}
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0), kernel_metadata=meta)
        >>> optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        >>> mu = optimizer.opt_state[0]["mu"]["kernel"]
        >>> type(mu).__name__, mu.out_sharding
        ('OptVariable', (None, 'mlp'))
    """


# -------------------------------------------------------------------- storage layout
@dataclasses.dataclass(frozen=True)
class _Layout:
    """Static description of an optax state tree.

    ``treedef`` is the tree with every ``State`` and array counted as one leaf; for each
    such leaf ``leaves`` holds ``(path, sub_paths)``: its storage path, and for a State
    the paths of its entries (None for an array). Hashable, so it is one static value
    in the graph definition rather than a tree the graph walker has to visit.
    """

    treedef: Any
    leaves: tuple

    def __repr__(self) -> str:  # the full tree is noise in a model printout
        return f"<optax state layout: {len(self.leaves)} parts>"


def _key_name(entry: Any) -> Any:
    for attr in ("name", "key", "idx"):  # GetAttrKey, DictKey/FlattenedIndexKey, SequenceKey
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return str(entry)


def _insert(root: dict, path: tuple, value: Any) -> None:
    node = root
    for key in path[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"Optimizer: optax state paths collide at {path!r}.")
    if path[-1] in node:
        raise ValueError(f"Optimizer: optax state paths collide at {path!r}.")
    node[path[-1]] = value


def _lookup(root: Any, path: tuple) -> Any:
    for key in path:
        root = root[key]
    return root


def _opt_metadata(param: Any, value: Any) -> dict:
    """Parameter metadata worth copying onto same-shaped optimizer state."""
    # (optax.masked leaves MaskedNode placeholders, which have no shape, for masked-out
    # parameters.)
    if not isinstance(param, Variable) or not hasattr(value, "shape") \
            or jnp.shape(param[...]) != value.shape:
        return {}
    metadata = param.get_metadata(exclude_required=True)
    # flax lets a parameter ask for a different sharding of its optimizer state.
    if "optimizer_sharding" in metadata:
        metadata["out_sharding"] = metadata.pop("optimizer_sharding")
    return metadata


def _to_storage(tree: Any, params: dict) -> tuple[_Layout, Any]:
    """Split an optax state into its static layout and a nested dict of OptState."""
    is_state = lambda x: isinstance(x, State)  # noqa: E731
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_state)
    root: dict = {}
    specs = []
    for key_path, leaf in with_paths:
        path = tuple(_key_name(k) for k in key_path)
        if not isinstance(leaf, State):
            specs.append((path, None))
            if not path:  # the whole optax state is one array
                return _Layout(treedef, tuple(specs)), OptArray(leaf)
            _insert(root, path, OptArray(leaf))
            continue
        flat = to_flat_state(leaf)
        specs.append((path, flat.paths))
        for sub, value in flat:
            variable = OptVariable(value, **_opt_metadata(params.get(sub), value))
            _insert(root, path + sub, variable)
    return _Layout(treedef, tuple(specs)), root


def _from_storage(layout: _Layout, storage: Any) -> Any:
    """The optax state (arrays) currently held in ``storage``."""
    leaves = []
    for path, sub_paths in layout.leaves:
        if sub_paths is None:
            leaves.append(_lookup(storage, path)[...])
        else:
            leaves.append(from_flat_state(
                [(sub, _lookup(storage, path + sub)[...]) for sub in sub_paths]))
    return layout.treedef.unflatten(leaves)


def _write_storage(layout: _Layout, storage: Any, tree: Any) -> None:
    """Write the arrays of the new optax state ``tree`` into the stored variables."""
    try:
        leaves = layout.treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"Optimizer.update: tx.update returned a state whose structure differs from "
            f"tx.init's ({e}). Hint: the optax transformation must keep its state "
            "structure fixed across steps."
        ) from None
    for (path, sub_paths), leaf in zip(layout.leaves, leaves):
        if sub_paths is None:
            _lookup(storage, path).value = leaf
        else:
            for sub, value in to_flat_state(leaf):
                _lookup(storage, path + sub).value = value


# ------------------------------------------------------------------------ helpers
def _unbox(tree: Any) -> Any:
    is_var = lambda x: isinstance(x, Variable)  # noqa: E731
    return jax.tree.map(lambda x: x[...] if is_var(x) else x, tree, is_leaf=is_var)


_MISSING = object()


class Optimizer(Object):
    """Optax state for the ``wrt`` variables of a model, plus a step counter.

    ``Optimizer(model, tx, wrt=...)`` initialises ``tx`` on the model's variables that
    match ``wrt``; :meth:`update` then applies gradients to them. The optimizer does not
    hold the model: pass it to ``update`` each time (as in ``flax.nnx`` 0.11+).

    Attributes:
        step: an :class:`OptState` holding the number of updates (``uint32``).
        tx: the optax ``GradientTransformation`` (static).
        opt_state: the optax state, as nested ``nnx.Dict`` s of :class:`OptState`
            variables keyed like flax.nnx's paths (``opt_state[0]['mu']['kernel']``).
        wrt: the filter selecting the optimised variables (static).

    Args:
        model: the model (any graph node) whose variables are optimised.
        tx: the optax transformation.
        wrt: filter choosing the variables; use the same filter as ``nnx.grad``. A
            filter that selects nothing raises ``InvalidFilterError`` (flax.nnx accepts it).
        graph: accepted for ``flax.nnx`` compatibility; nnxlib always walks the graph.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        >>> sorted(nnx.state(optimizer)["opt_state"][0])
        ['count', 'mu', 'nu']
        >>> optimizer.opt_state[0]["mu"]["kernel"].shape
        (2, 2)
    """

    def __init__(self, model: Any, tx: optax.GradientTransformation, *, wrt: Any = Param,
                 graph: bool | None = None):
        graphlib.check_mode(model, graph, "nnx.Optimizer")
        pairs = _selected(model, wrt)
        if not pairs:  # an optimizer of nothing would silently never train anything
            kinds: dict = {}
            for path, leaf in to_flat_state(graphlib.state(model, graph=True)):
                kinds.setdefault(type(leaf).__name__, []).append(format_path(path))
            found = "; ".join(f"{len(paths)} {kind} (e.g. {paths[0]})"
                              for kind, paths in kinds.items()) or "no variables at all"
            raise InvalidFilterError(
                f"Optimizer: wrt={getattr(wrt, '__name__', repr(wrt))} selects no variable of the {type(model).__name__}"
                f" model. Expected at least one variable to optimise; the model holds "
                f"{found}. Hint: pass the kind of its trainable variables, e.g. "
                "wrt=nnx.Param (and the same filter to nnx.grad)."
            )
        params = from_flat_state([(p, v[...]) for p, v in pairs])
        layout, storage = _to_storage(tx.init(params), dict(pairs))
        self.step = OptState(jnp.array(0, dtype=jnp.uint32))
        self.tx = tx
        self.opt_state = storage
        self.wrt = wrt
        self._opt_layout = layout

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: explain the flax 0.11 API change.
        if name == "model":
            raise AttributeError(
                f"{type(self).__name__} has no attribute 'model': the optimizer does not "
                "hold the model (flax.nnx 0.11+ API). Hint: pass the model to "
                "optimizer.update(model, grads), or use nnx.ModelAndOptimizer."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def update(self, model: Any, grads: Any = _MISSING, /, **kwargs: Any) -> Any:
        """Apply ``grads`` to ``model``'s ``wrt`` variables and advance the optax state.

        Runs ``tx.update(grads, opt_state, params, **kwargs)`` (``params`` is passed for
        transformations that need it, extra keywords for ``GradientTransformationExtraArgs``
        such as line searches), then ``optax.apply_updates``, writes the new values into
        the model's variables and increments ``step``. Nothing is changed if the
        gradients do not match the parameters.

        Args:
            model: the model given to the constructor (or one with the same structure).
            grads: a ``State`` (e.g. from ``nnx.grad``) or nested dict of gradients whose
                paths are those of ``nnx.state(model, wrt)``, or a module holding
                gradients (tree-mode ``nnx.grad``); entries that are variables not
                matching ``wrt`` are ignored.
            **kwargs: passed to ``tx.update`` (variables are unwrapped to arrays).

        Returns:
            The updates applied (a ``State`` of arrays).

        Example:
            >>> import jax, jax.numpy as jnp, optax
            >>> import nnxlib as nnx
            >>> model = nnx.Linear(1, 1, use_bias=False, kernel_init=nnx.initializers.ones,
            ...                    rngs=nnx.Rngs(0))
            >>> optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)
            >>> updates = optimizer.update(model, nnx.State({"kernel": jnp.full((1, 1), 2.0)}))
            >>> model.kernel[...], updates["kernel"].tolist()
            (Array([[0.]], dtype=float32), [[-1.0]])
        """
        if grads is _MISSING:
            raise TypeError(
                "Optimizer.update() takes (model, grads); grads is missing. Hint: since "
                "flax.nnx 0.11 the model is passed explicitly: optimizer.update(model, "
                "grads). Use nnx.ModelAndOptimizer for the old update(grads) form."
            )
        pairs = _selected(model, self.wrt)
        params = from_flat_state([(p, v[...]) for p, v in pairs])
        grad_state = self._match_grads(pairs, grads)
        opt_state = _from_storage(self._opt_layout, self.opt_state)
        updates, new_opt_state = self.tx.update(grad_state, opt_state, params, **_unbox(kwargs))
        new_params = optax.apply_updates(params, updates)
        raw = []  # leaves held directly as arrays (no Variable box) go through nnx.update
        for (path, target), new in zip(pairs, to_flat_state(new_params).leaves):
            if isinstance(target, Variable):
                target.value = new
            else:
                raw.append((path, new))
        if raw:
            graphlib.update(model, from_flat_state(raw))
        _write_storage(self._opt_layout, self.opt_state, new_opt_state)
        self.step[...] = self.step[...] + 1
        return updates

    def _match_grads(self, pairs: list, grads: Any) -> State:
        """Gradients as a State of arrays in parameter order, or a clear error."""
        if graphlib.is_graph_node(grads):  # tree-mode nnx.grad: a module of gradients
            grads = graphlib.state(grads, graph=True)
        if isinstance(grads, Variable) or not hasattr(grads, "items"):
            raise TypeError(
                f"Optimizer.update: grads must be an nnx.State or a nested dict, got "
                f"{type(grads).__name__}. Hint: use grads = nnx.grad(loss_fn)(model, ...)."
            )
        predicate = to_predicate(self.wrt)
        # Variables in grads that do not match wrt are dropped, as flax.nnx does; raw
        # arrays carry no kind to filter by, so all of them are kept and checked.
        given = {path: _unbox(g) for path, g in to_flat_state(grads)
                 if not isinstance(g, Variable) or predicate(path, g)}
        expected = [p for p, _ in pairs]
        missing = [p for p in expected if p not in given]
        unexpected = sorted(set(given) - set(expected), key=format_path)
        problems = []
        if missing:
            problems.append(f"missing gradients for {[format_path(p) for p in missing[:5]]}")
        if unexpected:
            problems.append(f"unexpected gradients for {[format_path(p) for p in unexpected[:5]]}")
        for path, target in pairs:
            if path in given:
                want, got = jnp.shape(target[...]), jnp.shape(given[path])
                if want != got:
                    problems.append(f"grads[{format_path(path)!r}] has shape {got}, the parameter "
                                    f"has shape {want}")
        if problems:
            raise ValueError(
                f"Optimizer.update: the gradients do not match the variables selected by "
                f"wrt={self.wrt!r}: {'; '.join(problems)}. Expected {len(expected)} "
                f"entries {[format_path(p) for p in expected[:8]]}, got {len(given)}. Hint: use "
                "the same wrt filter for nnx.grad and nnx.Optimizer, and differentiate "
                "with respect to the model passed to update."
            )
        return from_flat_state([(p, given[p]) for p in expected])


def _selected(model: Any, wrt: Any) -> list[tuple[tuple, Any]]:
    """``(path, variable)`` for the variables of ``model`` matching ``wrt``."""
    return list(to_flat_state(graphlib.state(model, wrt, graph=True)))


class ModelAndOptimizer(Optimizer):
    """An :class:`Optimizer` that also holds the model: ``update(grads)``.

    Kept for code written against the pre-0.11 ``flax.nnx`` API.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import nnxlib as nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> state = nnx.ModelAndOptimizer(model, optax.sgd(0.1))
        >>> _ = state.update(jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))
        >>> state.model is model, int(state.step[...])
        (True, 1)
    """

    def __init__(self, model: Any, tx: optax.GradientTransformation, *, wrt: Any = Param,
                 graph: bool | None = None):
        super().__init__(model, tx, wrt=wrt, graph=graph)
        self.model = model

    def update(self, grads: Any, /, **kwargs: Any) -> Any:  # type: ignore[override]
        """Apply ``grads`` to the held model (see :meth:`Optimizer.update`).

        Example:
            >>> import jax.numpy as jnp, optax
            >>> import nnxlib as nnx
            >>> model = nnx.PReLU(1.0)
            >>> state = nnx.ModelAndOptimizer(model, optax.sgd(1.0))
            >>> _ = state.update(nnx.State({"negative_slope": jnp.array(0.25)}))
            >>> model.negative_slope[...]
            Array(0.75, dtype=float32)
        """
        return super().update(self.model, grads, **kwargs)
