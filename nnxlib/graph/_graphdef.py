"""Graph structure: ``GraphDef`` and the cached walk (``Plan``), over the node types of
:mod:`nnxlib.graph._node_types`.

This is the machinery under :mod:`nnxlib.graph`. A graph is walked once by a
:class:`_Flattener` into a tree of definitions (``NodeDef``, ``PytreeDef``,
``VariableDef``, ``NodeRef`` for a second reference to a shared object, ``ArrayLeaf``,
``Static``) wrapped in an immutable :class:`GraphDef`, plus the list of leaves in order.
:func:`build` (or the builder compiled once per ``GraphDef``) turns definitions and
leaves back into objects. A :class:`Plan` caches one walk on its root object, valid while
no object it covers has been structurally changed (see :mod:`nnxlib.variables._tracking`).

Example:
    >>> import nnxlib as nnx
    >>> from nnxlib.graph._graphdef import plan_for
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> plan_for(model) is plan_for(model)      # cached while the structure is unchanged
    True
    >>> model.note = "new static attribute"
    >>> plan_for(model).graphdef == nnx.graphdef(nnx.Linear(2, 3, rngs=nnx.Rngs(1)))
    False
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Generic, Iterator, NamedTuple, TypeVar

import jax

from nnxlib.graph._node_types import (  # noqa: F401  (the graph layer's vocabulary, re-exported)
    JaxPytreeType,
    NodeImpl,
    _pytree_builder,
    is_array,
    is_graph_node,
    is_node_or_variable,
    jax_children,
    key_of_entry,
    node_impl,
    pytree_impl,
    register_graph_node_type,
)
from nnxlib.graph._tree_check import NOT_WALKED, first_shared, walk_defs
from nnxlib.state import partition_indices
from nnxlib.variables import (
    Variable,
    _new_variable,
    _refs,
    _tracking,
    freeze_metadata,
    new_with_mode,
    put_raw,
    thaw_metadata,
)
from nnxlib.variables._arrays import aval_of
from nnxlib.variables._frozen import Unhashable, freeze
from nnxlib.variables._raw import is_ref_mode


# --------------------------------------------------------------- graph definition
class NodeDef(NamedTuple):
    """A mutable node: its type, identity index and attribute definitions."""

    type: type
    index: int
    attributes: tuple
    kind: str = "node"


class PytreeDef(NamedTuple):
    """An immutable container (tuple, plain list/dict inside a pytree root)."""

    type: type
    attributes: tuple
    kind: str = "pytree"


class VariableDef(NamedTuple):
    """A variable: its kind, identity index and (frozen) metadata; consumes one leaf."""

    type: type
    index: int
    metadata: tuple
    kind: str = "variable"


class NodeRef(NamedTuple):
    """A second path to an object already defined at ``index`` (a shared reference)."""

    index: int
    kind: str = "ref"


class ArrayLeaf(NamedTuple):
    """A raw array held directly by an attribute; consumes one leaf."""

    kind: str = "array"


class Static(NamedTuple):
    """A static (non-array) attribute value, part of the structure."""

    value: Any
    kind: str = "static"


Node = TypeVar("Node")  # the root type a graph definition builds: ``GraphDef[Model]``


class GraphDef(Generic[Node]):
    """The static structure of a graph: immutable, hashable, compares by value.

    Example:
        >>> import nnxlib as nnx
        >>> a = nnx.graphdef(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        >>> b = nnx.graphdef(nnx.Linear(2, 3, rngs=nnx.Rngs(1)))
        >>> a == b, hash(a) == hash(b)
        (True, True)
    """

    __slots__ = ("root", "paths", "avals", "num_leaves", "_hash", "_builder", "_shared",
                 "_opaque")

    def __init__(self, root: Any, paths: tuple, avals: tuple | None = None):
        set_ = object.__setattr__
        set_(self, "root", root)
        set_(self, "paths", paths)  # leaf paths in leaf order (derived; not in equality)
        # (shape, dtype) of each leaf when the graph was walked, None for non-arrays:
        # what merge checks a state against. Derived, so not part of equality either.
        set_(self, "avals", avals if avals is not None else (None,) * len(paths))
        set_(self, "num_leaves", len(paths))
        set_(self, "_hash", hash(root))
        set_(self, "_builder", None)  # compiled lazily by build_fresh (a cache)
        set_(self, "_shared", NOT_WALKED)  # cached by shared_reference
        set_(self, "_opaque", NOT_WALKED)  # cached by first_non_pytree

    def build_fresh(self, leaves: list, objects: dict | None = None) -> Any:
        """Build new objects from ``leaves`` (Variables are reused, raw values boxed).

        Uses a builder compiled from the definition once, so repeated merges of the
        same structure skip the interpretation work. ``leaves`` are in
        ``self.paths`` order.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> graphdef = nnx.graphdef(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
            >>> graphdef.paths
            (('bias',), ('kernel',))
            >>> layer = graphdef.build_fresh([jnp.zeros(3), jnp.ones((2, 3))])
            >>> layer(jnp.ones((1, 2)))
            Array([[2., 2., 2.]], dtype=float32)
        """
        builder = self._builder
        if builder is None:
            builder = _compile(self.root)
            object.__setattr__(self, "_builder", builder)
        return builder(iter(leaves), {} if objects is None else objects,
                       _tracking.current_trace())

    def shared_reference(self) -> tuple | None:
        """The first object reachable by two paths, or None when the graph is a tree.

        Returns ``(type, first path, second path)``; found once per definition and
        cached, so tree mode's check is one attribute read per call.

        Example:
            >>> import nnxlib as nnx
            >>> shared = nnx.Param(1.0)
            >>> nnx.graphdef(nnx.Dict(a=shared, b=shared)).shared_reference()
            (<class 'nnxlib.variables.Param'>, ('a',), ('b',))
            >>> print(nnx.graphdef(nnx.Dict(a=shared)).shared_reference())
            None
        """
        found = self._shared
        if found is NOT_WALKED:
            found = first_shared(self.root)
            object.__setattr__(self, "_shared", found)
        return found

    def first_non_pytree(self) -> tuple | None:
        """``(type, path)`` of the first node whose class opted out of being a JAX
        pytree (``class Foo(nnx.Pytree, pytree=False)``), or None; cached.

        Example:
            >>> import nnxlib as nnx
            >>> class Opaque(nnx.Pytree, pytree=False):
            ...     pass
            >>> nnx.graphdef(nnx.List([Opaque()])).first_non_pytree()[1]
            (0,)
        """
        found = self._opaque
        if found is NOT_WALKED:
            found = next(((d.type, path) for d, path in walk_defs(self.root)
                          if d.kind == "node" and not getattr(d.type, "_nnx_pytree", True)),
                         None)
            object.__setattr__(self, "_opaque", found)
        return found

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"GraphDef is immutable: cannot set {name!r}.")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"GraphDef is immutable: cannot delete {name!r}.")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (
            isinstance(other, GraphDef) and self._hash == other._hash
            and self.root == other.root
        )

    def __repr__(self) -> str:
        return f"GraphDef({_def_repr(self.root, 0)})"

    def __reduce__(self) -> tuple:
        return (GraphDef, (self.root, self.paths, self.avals))


# A GraphDef is static data: as a pytree it has no leaves and travels as auxiliary data,
# so ``jax.jit(f)(graphdef, state)`` and ``jax.tree.map`` over ``(graphdef, state)`` work.
jax.tree_util.register_static(GraphDef)


def _def_repr(d: Any, depth: int) -> str:
    pad = "  " * (depth + 1)
    if isinstance(d, NodeDef) or isinstance(d, PytreeDef):
        inner = ",\n".join(f"{pad}{k!r}: {_def_repr(v, depth + 1)}" for k, v in d.attributes)
        index = f", index={d.index}" if isinstance(d, NodeDef) else ""
        body = f"\n{inner}\n{'  ' * depth}" if inner else ""
        return f"{d.type.__name__}({index.lstrip(', ')}){{{body}}}"
    if isinstance(d, VariableDef):
        meta = ", ".join(f"{k}={e!r}" for k, e in d.metadata)
        return f"{d.type.__name__}(index={d.index}{', ' if meta else ''}{meta})"
    if isinstance(d, NodeRef):
        return f"<ref {d.index}>"
    if isinstance(d, ArrayLeaf):
        return "<array>"
    return repr(d.value)


# ------------------------------------------------------------------ flatten/build
class _Flattener:
    """One walk over a graph; collects definitions, leaves and the objects seen."""

    __slots__ = ("index_of", "objects", "paths", "leaves", "avals", "slots", "stamped",
                 "_next")

    def __init__(self, seed: dict[int, int] | None = None, first_index: int = 0):
        self.index_of: dict[int, int] = dict(seed) if seed else {}
        self.objects: dict[int, Any] = {}  # index -> object (nodes and variables)
        self.paths: list = []
        self.leaves: list = []
        self.avals: list = []
        self.slots: list = []  # (leaf position, owner, key, set_raw) for raw arrays
        self.stamped: list = []  # every mutable object covered (for plan validation)
        self._next = max(first_index, max(self.index_of.values(), default=-1) + 1)

    def new_index(self, obj: Any) -> tuple[int, bool]:
        key = id(obj)
        index = self.index_of.get(key)
        if index is not None:
            if index not in self.objects:  # seeded (known from outside), first visit
                self.objects[index] = obj
                return index, True
            return index, False
        index = self._next
        self._next += 1
        self.index_of[key] = index
        self.objects[index] = obj
        return index, True

    def flatten_root(self, value: Any) -> Any:
        """Flatten a root: a value that is no graph node, variable or container (a
        number, a string, an array) is itself the one leaf, at path ``()``."""
        if (node_impl(type(value)) is None and not isinstance(value, Variable)
                and not is_array(value) and jax_children(value) is None):
            self.paths.append(())
            self.leaves.append(value)
            self.avals.append(aval_of(value))
            return ArrayLeaf()
        return self.flatten(value, ())

    def flatten(self, value: Any, path: tuple, owner: Any = None, key: Any = None,
                set_raw: Any = None) -> Any:
        if isinstance(value, Variable):
            index, first = self.new_index(value)
            if not first:
                return NodeRef(index)
            self.stamped.append(value)
            self.paths.append(path)
            self.leaves.append(value)
            self.avals.append(aval_of(value._raw_value))
            return VariableDef(type(value), index, freeze_metadata(value._metadata))
        impl = node_impl(type(value))
        if impl is not None:
            if impl.pytree:
                attrs = tuple((k, self.flatten(v, path + (k,), value, k, None))
                              for k, v in impl.children(value))
                return PytreeDef(type(value), attrs)
            index, first = self.new_index(value)
            if not first:
                return NodeRef(index)
            self.stamped.append(value)
            attrs = tuple((k, self.flatten(v, path + (k,), value, k, impl.set_raw))
                          for k, v in impl.children(value))
            return NodeDef(type(value), index, attrs)
        if is_array(value):
            if set_raw is not None:
                self.slots.append((len(self.leaves), owner, key, set_raw))
            self.paths.append(path)
            self.leaves.append(value)
            self.avals.append(aval_of(value))
            return ArrayLeaf()
        found = jax_children(value)
        if found is not None:  # a JAX pytree nnxlib does not know: walked if it holds state
            pairs, spec = found
            attrs = tuple((k, self.flatten(v, path + (k,), value, k, None)) for k, v in pairs)
            if any(d.kind != "static" for _, d in attrs):
                return PytreeDef(spec, attrs)
        return Static(freeze(value))


def build(d: Any, leaves: Iterator, objects: dict[int, Any],
          existing: dict[int, Any] | None = None) -> Any:
    """Rebuild the object for definition ``d``, consuming ``leaves`` in order.

    ``objects`` collects index -> object (for shared references). With ``existing``,
    objects whose index is a key there are updated in place instead of created, which
    is how a structural change made inside a transform reaches the caller's objects.
    """
    kind = d.kind
    if kind == "variable":
        leaf = next(leaves)
        old = existing.get(d.index) if existing else None
        if old is not None:
            put_raw(old, leaf._raw_value if isinstance(leaf, Variable) else leaf)
            metadata = thaw_metadata(d.metadata)
            if metadata != old._metadata:
                object.__setattr__(old, "_metadata", metadata)
                _tracking.structure_changed(old)
            var = old
        elif isinstance(leaf, Variable):
            var = leaf
        else:
            metadata = thaw_metadata(d.metadata)
            if metadata and _tracking.current_trace() == _tracking.EAGER and \
                    _wants_refs(metadata, leaf):
                var = new_with_mode(d.type, leaf, metadata)  # a ref variable made inside
            else:
                var = _new_variable(d.type, leaf, metadata, _tracking.current_trace())
        objects[d.index] = var
        return var
    if kind == "node":
        impl = node_impl(d.type)
        old = existing.get(d.index) if existing else None
        node = old if old is not None else impl.create_empty(d.type, _tracking.current_trace())
        objects[d.index] = node
        pairs = [(k, build(v, leaves, objects, existing)) for k, v in d.attributes]
        impl.fill(node, pairs)
        if old is not None:
            _tracking.structure_changed(node)
        return node
    if kind == "ref":
        try:
            return objects[d.index]
        except KeyError:
            return existing[d.index]  # type: ignore[index]
    if kind == "array":
        leaf = next(leaves)
        return leaf._raw_value if isinstance(leaf, Variable) else leaf
    if kind == "pytree":
        keys = tuple(k for k, _ in d.attributes)
        values = [build(v, leaves, objects, existing) for _, v in d.attributes]
        return _pytree_builder(d.type)(keys, values)
    value = d.value
    return value.value if isinstance(value, Unhashable) else value


def _wants_refs(metadata: dict, leaf: Any) -> bool:
    """A ref variable built from a plain value (one made inside a transform, whose refs
    could not leave it): it gets new refs."""
    return is_ref_mode(metadata) and not isinstance(leaf, Variable) and \
        not _refs.holds_refs(leaf)


def _compile(d: Any) -> Callable[[Iterator, dict, Any], Any]:
    """Turn a definition into a closure ``(leaves, objects, trace) -> object``.

    Equivalent to :func:`build` without ``existing``; the dispatch on definition kinds
    and the lookups of node implementations happen once here instead of per merge.
    """
    kind = d.kind
    if kind == "variable":
        var_type, index, frozen = d.type, d.index, d.metadata

        def build_variable(leaves: Iterator, objects: dict, trace: Any) -> Any:
            leaf = next(leaves)
            if not isinstance(leaf, Variable):
                leaf = _new_variable(var_type, leaf, thaw_metadata(frozen), trace)
            objects[index] = leaf
            return leaf

        return build_variable
    if kind == "node":
        node_type, index = d.type, d.index
        impl = node_impl(node_type)
        create, fill = impl.create_empty, impl.fill
        statics = [(k, _static_value(v)) for k, v in d.attributes if v.kind == "static"]
        if impl.keyed:
            dynamic = tuple((k, _compile(v)) for k, v in d.attributes if v.kind != "static")
        else:  # order matters (lists): compile everything, statics included
            statics = []
            dynamic = tuple((k, _compile(v)) for k, v in d.attributes)

        if impl.keyed and dynamic and all(v.kind == "variable" for k, v in d.attributes
                                          if v.kind != "static"):
            # A leaf module (only variables and statics): inline the variable builds,
            # the most common node and the one merge spends most of its time on.
            variables = tuple((k, v.type, v.index, v.metadata) for k, v in d.attributes
                              if v.kind == "variable")

            def build_leaf_node(leaves: Iterator, objects: dict, trace: Any) -> Any:
                node = create(node_type, trace)
                objects[index] = node
                pairs = []
                for k, var_type, var_index, frozen in variables:
                    leaf = next(leaves)
                    if not isinstance(leaf, Variable):
                        leaf = _new_variable(var_type, leaf, thaw_metadata(frozen), trace)
                    objects[var_index] = leaf
                    pairs.append((k, leaf))
                if statics:
                    pairs += statics
                fill(node, pairs)
                return node

            return build_leaf_node

        def build_node(leaves: Iterator, objects: dict, trace: Any) -> Any:
            node = create(node_type, trace)
            objects[index] = node
            pairs = [(k, b(leaves, objects, trace)) for k, b in dynamic]
            if statics:
                pairs += statics
            fill(node, pairs)
            return node

        return build_node
    if kind == "ref":
        ref_index = d.index
        return lambda leaves, objects, trace: objects[ref_index]
    if kind == "array":
        def build_array(leaves: Iterator, objects: dict, trace: Any) -> Any:
            leaf = next(leaves)
            return leaf._raw_value if isinstance(leaf, Variable) else leaf

        return build_array
    if kind == "pytree":
        make = _pytree_builder(d.type)
        keys = tuple(k for k, _ in d.attributes)
        children = tuple(_compile(v) for _, v in d.attributes)
        return lambda leaves, objects, trace: make(
            keys, [b(leaves, objects, trace) for b in children])
    value = _static_value(d)
    return lambda leaves, objects, trace: value


def _static_value(d: Static) -> Any:
    value = d.value
    return value.value if isinstance(value, Unhashable) else value


# -------------------------------------------------------------------- split plans
class Plan:
    """A cached walk of one or more roots: the GraphDef and how to read current leaves.

    A plan is cached *on* its root (``_nnx_plan``, or ``_nnx_joint`` for several roots),
    so it must never hold its roots strongly: that would be a reference cycle, and a
    deleted model (with its device arrays) would wait for the cycle collector. Roots are
    therefore kept as weak references, and the fields that can contain them
    (``objects``, ``slots``, ``template``) are stored without them and completed on
    access; everything below the roots is held normally.
    """

    __slots__ = ("epoch", "graphdef", "_template", "_slots", "stamped", "_objects",
                 "partitions", "path_index", "roots", "_root_leaves", "_root_owners",
                 "_root_indices", "writers", "_has_refs", "__weakref__")

    def __init__(self, graphdef: GraphDef, flat: _Flattener, roots: tuple):
        self.epoch = _tracking.EPOCH[0]
        self.graphdef = graphdef
        self.roots = tuple(_weak(r) for r in roots)
        root_ids = {id(r) for r in roots}
        position = {id(r): i for i, r in enumerate(roots)}
        # Variables stay; raw-array positions are refreshed from their slots.
        template = flat.leaves
        self._root_leaves = tuple((i, position[id(v)]) for i, v in enumerate(template)
                                  if id(v) in root_ids)
        for i, _ in self._root_leaves:
            template[i] = None
        self._template = template
        slots = flat.slots
        self._root_owners = tuple((k, position[id(slot[1])]) for k, slot in enumerate(slots)
                                  if id(slot[1]) in root_ids)
        for k, _ in self._root_owners:
            slots[k] = (slots[k][0], None, *slots[k][2:])
        self._slots = slots
        self.stamped = [obj for obj in flat.stamped if id(obj) not in root_ids]
        objects = flat.objects
        self._root_indices = tuple((i, position[id(obj)]) for i, obj in objects.items()
                                   if id(obj) in root_ids)
        for i, _ in self._root_indices:
            del objects[i]
        self._objects = objects
        self.partitions: dict = {}
        self.path_index: dict | None = None
        self.writers: tuple | None = None  # transforms' write-back cache (see _lift)
        self._has_refs: bool | None = None

    def has_refs(self) -> bool:
        """True when some leaf is a ref-backed variable (``ref=True``/``hijax=True``);
        decided once per plan (a mode change is a metadata change: a new plan)."""
        found = self._has_refs
        if found is None:
            found = self._has_refs = any(
                isinstance(v, Variable) and is_ref_mode(v._metadata) for v in self.template)
        return found

    def _root(self, k: int) -> Any:
        root = self.roots[k]()
        if root is None:  # only reachable through a plan whose root died mid-use
            raise ReferenceError("the root of this split plan no longer exists")
        return root

    @property
    def template(self) -> list:
        """Leaf owners in leaf order: the live Variables (raw arrays as last read)."""
        if not self._root_leaves:
            return self._template
        template = list(self._template)
        for i, k in self._root_leaves:
            template[i] = self._root(k)
        return template

    @property
    def slots(self) -> list:
        """``(leaf position, owner, key, set_raw)`` of raw arrays held by attributes."""
        if not self._root_owners:
            return self._slots
        slots = list(self._slots)
        for k, r in self._root_owners:
            slots[k] = (slots[k][0], self._root(r), *slots[k][2:])
        return slots

    @property
    def objects(self) -> dict:
        """Identity index -> object, for every node and variable the plan covers."""
        objects = dict(self._objects)
        for i, k in self._root_indices:
            objects[i] = self._root(k)
        return objects

    @property
    def others(self) -> tuple:
        """Weak references to the roots after the first (joint plans)."""
        return self.roots[1:]

    def holds_root_leaf(self) -> bool:
        """True when a root is itself a leaf (a Variable passed as a root)."""
        return bool(self._root_leaves)

    def is_valid(self) -> bool:
        epoch = _tracking.EPOCH[0]
        if self.epoch == epoch:
            return True
        limit = self.epoch
        for ref in self.roots:
            root = ref()
            if root is None or root._nnx_stamp > limit:
                return False
        for obj in self.stamped:
            if obj._nnx_stamp > limit:
                return False
        self.epoch = epoch
        return True

    def leaves(self) -> list:
        """Current leaves: the live variables, plus fresh reads of raw-array slots."""
        leaves = list(self.template)
        for position, owner, key, _ in self.slots:
            leaves[position] = _read_child(owner, key)
        return leaves

    def partition(self, filters: tuple, leaves: list) -> list:
        try:
            return self.partitions[filters]
        except (KeyError, TypeError):
            pass
        paths = self.graphdef.paths
        groups = partition_indices(paths, leaves, filters)
        result = [(tuple(paths[i] for i in idx), idx) for idx in groups]
        try:
            self.partitions[filters] = result
        except TypeError:  # unhashable filter: just don't cache
            pass
        return result


class _Strong:
    """Stands in for a weak reference to an object that does not support them."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __call__(self) -> Any:
        return self.obj


def _weak(obj: Any) -> Any:
    try:
        return weakref.ref(obj)
    except TypeError:
        return _Strong(obj)


def _read_child(owner: Any, key: Any) -> Any:
    d = getattr(owner, "__dict__", None)
    if d is not None and isinstance(key, str) and key in d:
        return d[key]
    return owner[key]


def plan_for(node: Any) -> Plan:
    """Return the (cached) :class:`Plan` for a root node, re-walking only if needed."""
    plan = getattr(node, "_nnx_plan", None)
    if plan is not None and plan.is_valid():
        return plan
    plan = _walk((node,))
    if is_graph_node(node):
        object.__setattr__(node, "_nnx_plan", plan)
    return plan


#: How many joint plans (different companion arguments) one root keeps.
JOINT_PLANS_PER_ROOT = 8


def plan_for_many(nodes: tuple) -> Plan:
    """A joint plan over several roots (shared references across them are kept).

    The GraphDef's root is a ``PytreeDef`` tuple of the roots, leaf paths start with
    the root's position. Cached on the first root, one plan per tuple of companion
    roots (up to :data:`JOINT_PLANS_PER_ROOT`), so several transforms alternating on
    the same first argument with different other arguments each keep theirs.
    """
    first = nodes[0]
    cache = getattr(first, "_nnx_joint", None)
    key = tuple(map(id, nodes[1:]))
    if cache is not None:
        plan = cache.get(key)
        if plan is not None and plan.is_valid():
            for ref, n in zip(plan.others, nodes[1:]):
                if ref() is not n:
                    break
            else:
                return plan
    else:
        cache = {}
        object.__setattr__(first, "_nnx_joint", cache)
    plan = _walk(nodes, joint=True)
    if len(cache) >= JOINT_PLANS_PER_ROOT and key not in cache:
        del cache[next(iter(cache))]  # the oldest entry
    cache[key] = plan
    return plan


def _walk(nodes: tuple, joint: bool = False) -> Plan:
    flat = _Flattener()
    if not joint:
        root = flat.flatten_root(nodes[0])
    else:
        root = PytreeDef(tuple, tuple((i, flat.flatten(n, (i,))) for i, n in enumerate(nodes)))
    return Plan(GraphDef(root, tuple(flat.paths), tuple(flat.avals)), flat, nodes)


def flatten(node: Any, seed: dict[int, int] | None = None
            ) -> tuple[GraphDef, list, _Flattener]:
    """Uncached walk: ``(graphdef, leaves, flattener)``; ``seed`` fixes known indices."""
    flat = _Flattener(seed)
    root = flat.flatten_root(node)
    return GraphDef(root, tuple(flat.paths), tuple(flat.avals)), flat.leaves, flat


def unflatten(graphdef: GraphDef, leaves: list, existing: dict[int, Any] | None = None
              ) -> Any:
    """Rebuild from a definition and leaves (raw values become fresh variables)."""
    if len(leaves) != graphdef.num_leaves:
        raise ValueError(
            f"unflatten: expected {graphdef.num_leaves} leaves, got {len(leaves)}."
        )
    return build(graphdef.root, iter(leaves), {}, existing)
