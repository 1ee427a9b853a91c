"""Variables: mutable boxes that hold one array each, plus free-form metadata.

A :class:`Variable` is how a module marks a value as *state*. Its kind (``Param``,
``BatchStat``, ``Cache``, …) says what the value is for, which lets filters pick, say,
only the parameters for differentiation. Metadata is a plain dict: sharding names, a
mesh, logical-axis rules, or anything a user wants to attach; it travels through split,
merge and every transform.

The ``nnxlib.variables`` package (the variables layer) imports only errors and display;
everything above imports it. This module defines ``Variable`` and its kinds; beside it:

* ``_arrays``: abstract shapes and ``v[key] = x`` semantics;
* ``_tracking``: structure stamps and trace checks shared by every mutable graph object
  (the one mechanism that keeps the structure cache honest);
* ``_metadata``, ``_sharding``, ``_placement``: metadata from initializers, value hooks,
  ``v.sharding``, and sharding metadata to placed arrays;
* ``_operators``: Python operators on variables; ``_raw``: ``get_raw_value``;
  ``_defaults``: the ``hijax``/``ref`` defaults; ``_frozen``: hashable metadata keys;
  ``_refs`` (where present): variables whose value lives in a ``jax.Ref``.

Example:
    >>> import jax.numpy as jnp
    >>> import nnxlib as nnx
    >>> w = nnx.Param(jnp.ones((2, 3)), out_sharding=("embed", "mlp"))
    >>> w.shape, w.out_sharding
    ((2, 3), ('embed', 'mlp'))
    >>> w[...] = w * 2          # replaces the value; the box stays the same object
    >>> float(w[0, 0])
    2.0

Variables behave like arrays in ``jnp`` code (operators, ``__jax_array__``, ``shape``,
``dtype``) and are JAX pytrees: ``jax.tree.map`` over a variable maps its value and keeps
its type and metadata.
"""

from __future__ import annotations

import copy
from typing import Any, Generic, TypeVar

import jax
import numpy as np

from nnxlib.display import render_variable
from nnxlib.variables import _placement, _refs, _tracking
from nnxlib.variables._arrays import same_aval, written_value
from nnxlib.variables._frozen import freeze_metadata, thaw_metadata
from nnxlib.variables._metadata import (
    HOOKS_IN_USE,
    VariableMetadata,
    note_hooks,
    run_value_hooks,
    with_metadata,
    with_partitioning,
)
from nnxlib.variables._metadata_access import (  # noqa: F401  (DEFAULT_METADATA, creation_options: re-exported)
    DEFAULT_METADATA,
    MetadataAccess,
    creation_options,
    default_metadata,
)
from nnxlib.variables._operators import ArrayProtocol, install_operators
from nnxlib.variables._raw import (
    _NEW_WITH_MODE,
    HijaxVariable,
    RawValueAccess,
    is_ref_mode,
    origin_ref,
)
from nnxlib.variables._sharding import ShardedVariable

__all__ = [
    "Variable",
    "Param",
    "BatchStat",
    "Cache",
    "Intermediate",
    "Perturbation",
    "VariableMetadata",
    "with_metadata",
    "with_partitioning",
    "variable_name_from_type",
    "variable_type_from_name",
    "register_variable_name",
]

V = TypeVar("V", bound="Variable")
A = TypeVar("A")  # the type of the held value, for annotations: ``nnx.Param[jax.Array]``
_MISSING = object()

# The metadata key that says how a value is sharded (flax 0.12's); spmd and the bridge
# read it. Its older spellings are accepted and stored under it.
SHARDING_KEY = _placement.SHARDING_KEY

# Collection names <-> variable types; filled by register_variable_name.
_NAME_OF_TYPE: dict[type, str] = {}
_TYPE_OF_NAME: dict[str, type] = {}
_AUTO_NAMES: set[str] = set()  # names taken implicitly by a class definition


class Variable(ShardedVariable, MetadataAccess, RawValueAccess, ArrayProtocol,
               Generic[A]):
    """A mutable box holding one value (usually an array) and a dict of metadata.

    Read the value with ``v[...]``, ``v.value`` or ``v.get_value()``; replace it with
    ``v[...] = x``, ``v.value = x`` or ``v.set_value(x)``. Metadata is given as keyword
    arguments and read as attributes or with :meth:`get_metadata`.

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> count = nnx.Variable(jnp.array(0), note="steps seen")
        >>> count.value += 1
        >>> int(count[...]), count.note
        (1, 'steps seen')
    """

    # _nnx_joint (left unset until used) caches the joint plan of a transform call
    # whose first argument is this variable; __weakref__ lets plans refer to it.
    # _nnx_origin: the variable a JAX-rebuilt ref view came from; _nnx_path: where a
    # variable of a with_vars view sits (for error messages). Both unset unless used.
    __slots__ = ("_raw_value", "_metadata", "_nnx_stamp", "_nnx_trace", "_nnx_joint",
                 "_nnx_origin", "_nnx_path", "__weakref__")

    def __init__(self, value: Any, **metadata: Any):
        if metadata:
            metadata = _placement.canonical_metadata(metadata, type(self).__name__)
        if isinstance(value, Variable):
            metadata = {**value._metadata, **metadata}
            value = value._raw_value
            if _refs.holds_refs(value):  # a new variable: its own copy of the value
                value = _refs.read(value)
        elif isinstance(value, VariableMetadata):
            given = _placement.canonical_metadata(value.metadata, type(self).__name__)
            metadata = {**given, **metadata}
            value = value.raw_value
        options = creation_options()
        if options:
            metadata = {**options, **metadata}
        object.__setattr__(self, "_metadata", metadata)
        if metadata:
            note_hooks(metadata)
            if "on_create_value" in metadata:  # the hook sees the variable being made
                object.__setattr__(self, "_raw_value", value)
                value = run_value_hooks(self, metadata, "on_create_value", value)
        if SHARDING_KEY in metadata:
            # Under a mesh (jax.set_mesh or mesh= metadata) the value is born sharded.
            value = _placement.place_new(value, metadata, f"new {type(self).__name__}")
        if is_ref_mode(metadata):  # ref=True / hijax=True: the value lives in jax.Refs
            value = _refs.to_refs(value)
            HOOKS_IN_USE[0] = True  # reads take the slow path, which reads refs
        object.__setattr__(self, "_raw_value", value)
        object.__setattr__(self, "_nnx_stamp", _tracking.EPOCH[0])
        object.__setattr__(self, "_nnx_trace", _tracking.current_trace())

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls._nnx_custom_get = cls.get_value is not Variable.get_value
        _register_pytree(cls)
        # Every subclass gets its class name; a redefinition (same name, e.g. a re-run
        # notebook cell or two test files) takes the name over from the older class,
        # but never a name given explicitly through register_variable_name.
        name = cls.__name__
        _NAME_OF_TYPE[cls] = name
        if name not in _TYPE_OF_NAME or name in _AUTO_NAMES:
            _TYPE_OF_NAME[name] = cls
            _AUTO_NAMES.add(name)

    # ------------------------------------------------------------------ value access
    @property
    def value(self) -> Any:
        """The held value (``v.value`` is ``v[...]``; assigning to it is ``set_value``).

        Example:
            >>> import nnxlib as nnx
            >>> p = nnx.Param(1.0)
            >>> p.value = 2.0
            >>> p.value
            2.0
        """
        if self._nnx_custom_get:
            return self.get_value()
        return self._read()

    @value.setter
    def value(self, new: Any) -> None:
        self.set_value(new)

    def _read(self) -> Any:
        """The held value through the escape check and the get hooks."""
        value = self._raw_value
        if value is ESCAPED:
            raise _escaped_error(self)
        if HOOKS_IN_USE[0]:  # value hooks or ref-backed variables exist somewhere
            metadata = self._metadata
            if is_ref_mode(metadata):
                value = _refs.read_leaf(value) if type(value) is _refs.Ref \
                    else self._read_mode(value)
                if "on_get_value" not in metadata:
                    return value
            return run_value_hooks(self, metadata, "on_get_value", value)
        return value

    _nnx_custom_get = False  # True: an overridden get_value serves v[...] and v.value

    def get_value(self, *, index: Any = _MISSING) -> Any:
        """Return the held value, or ``value[index]`` when ``index`` is given.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> p = nnx.Param(jnp.arange(6).reshape(2, 3))
            >>> p.get_value(index=1).tolist(), p.get_value(index=(0, 2)).tolist()
            ([3, 4, 5], 2)
        """
        value = self._read()
        return value if index is _MISSING or index is Ellipsis else value[index]

    def set_value(self, value: Any, *, index: Any = _MISSING) -> None:
        """Replace the held value (any shape or dtype; ``v.value = x`` is the same).

        With ``index``, write ``value`` into that part of the held value instead, as
        ``v[index] = value`` does: an array keeps its shape and dtype (``value`` is cast
        and broadcast; a shape that does not fit raises
        :class:`~nnxlib.errors.ShapeMismatchError`), a list or dict gets the item set
        (on a copy, so a list shared with other code is left alone).

        Checked at assignment: the variable must belong to the current trace, and the
        value must not be a tracer of a transform that has already returned.

        Example:
            >>> import jax.numpy as jnp
            >>> import nnxlib as nnx
            >>> p = nnx.Param(1.0)
            >>> p.set_value(2.0)
            >>> p.value
            2.0
            >>> q = nnx.Param(jnp.zeros((2, 2)))
            >>> q.set_value(1.0, index=1)
            >>> q.value.tolist()
            [[0.0, 0.0], [1.0, 1.0]]
        """
        new = value
        if index is not _MISSING:
            old = self.value
            if isinstance(old, (list, dict)):
                new = copy.copy(old)
                new[index] = _unbox(value)
            else:
                new = written_value(old, index, _unbox(value), type(self).__name__)
        if isinstance(new, Variable):
            new = new._raw_value
        if HOOKS_IN_USE[0]:
            new = run_value_hooks(self, self._metadata, "on_set_value", new)
        self._store(new, "set the value")

    def _store(self, new: Any, what: str, check: bool = True) -> None:
        if self._metadata and self._store_mode(new, what, check):
            return  # a ref-backed variable wrote into its refs (an immutable one raised)
        trace = self._nnx_trace
        if check and trace is not None and trace != _tracking.current_trace():
            _tracking.check_trace(self, what)
        if check:
            _tracking.check_value(self, new, what)
        old = self._raw_value
        object.__setattr__(self, "_raw_value", new)
        if not same_aval(old, new):
            # Graph definitions record each leaf's shape and dtype (merge checks states
            # against them), so a new shape or dtype is a structural change.
            _tracking.structure_changed(self)

    def _stored_value(self) -> Any:
        return _stored(self)  # the held value without hooks; raises once escaped

    def __getitem__(self, key: Any) -> Any:
        if self._nnx_custom_get:
            return self.get_value(index=key)
        value = self._read()  # one read path: escape check and get hooks
        return value if key is Ellipsis else value[key]

    def __setitem__(self, key: Any, new: Any) -> None:
        """``v[key] = x`` writes into the held array with JAX indexing semantics.

        The array keeps its shape and dtype: ``x`` is cast to the dtype and broadcast to
        the indexed shape; a shape that does not broadcast raises
        :class:`~nnxlib.errors.ShapeMismatchError` and leaves the value as it was. To
        replace the value with one of another shape or dtype use ``v.value = x``.
        """
        value = self._raw_value
        if value is ESCAPED:
            raise _escaped_error(self)
        if self._metadata and is_ref_mode(self._metadata):
            value = _refs.read(value)
        if isinstance(value, (list, dict)):  # a pytree value: set the item
            self.set_value(new, index=key)
            return
        self.set_value(written_value(value, key, _unbox(new), type(self).__name__))

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: metadata first, then the value's own
        # attributes (``v.sum()``, ``v.T``) so a variable reads like its array.
        if name.startswith("__") or name in Variable.__slots__:
            raise AttributeError(name)
        metadata = object.__getattribute__(self, "_metadata")
        if name in metadata:
            return metadata[name]
        if name == "sharding_names":  # flax 0.12's deprecated reader of out_sharding
            _placement.warn_alias(name, type(self).__name__)
            return metadata.get(SHARDING_KEY)
        if name in DEFAULT_METADATA:
            return default_metadata(name)
        value = object.__getattribute__(self, "_raw_value")
        if _refs.is_ref(value):
            value = _refs.read_leaf(value)
        if not name.startswith("_") and hasattr(value, name):
            return getattr(value, name)
        raise AttributeError(
            f"{type(self).__name__} has no metadata or value attribute {name!r}; "
            f"metadata keys are {sorted(metadata)}. Hint: set it with "
            f"set_metadata({name}=...)."
        )

    def __setattr__(self, name: str, new: Any) -> None:
        if name == "value":
            self.set_value(new)
        elif name.startswith("_"):
            object.__setattr__(self, name, new)
        else:
            self.set_metadata(**{name: new})

    def __delattr__(self, name: str) -> None:
        if name not in self._metadata:
            raise AttributeError(f"{type(self).__name__} has no metadata {name!r}")
        metadata = dict(self._metadata)
        del metadata[name]
        object.__setattr__(self, "_metadata", metadata)
        _tracking.structure_changed(self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the held value: ``nnx.Variable(fn)(x)`` is ``fn(x)``.

        Example:
            >>> import nnxlib as nnx
            >>> nnx.Variable(lambda x: x + 1)(1)
            2
        """
        return self.value(*args, **kwargs)

    # ----------------------------------------------------------------- construction
    def replace(self: V, value: Any = _MISSING, **metadata: Any) -> V:
        """Return a new variable of the same type with a new value and/or metadata.

        Example:
            >>> import nnxlib as nnx
            >>> p = nnx.Param(1.0, tag="a")
            >>> q = p.replace(2.0, tag="b")
            >>> (p.value, p.tag), (q.value, q.tag)
            ((1.0, 'a'), (2.0, 'b'))
        """
        new_value = self._raw_value if value is _MISSING else value
        metadata = _placement.canonical_metadata(metadata, type(self).__name__)
        return new_with_mode(type(self), new_value, {**self._metadata, **metadata})

    def copy(self: V, value: Any = _MISSING, **updates: Any) -> V:
        """Return a new variable of the same type: the same value (or ``value``) and a
        copy of the metadata updated with ``updates``.

        Example:
            >>> import nnxlib as nnx
            >>> p = nnx.Param(1.0, tag="a")
            >>> q = p.copy(2.0, tag="b")
            >>> q is p, (p.value, p.tag), (q.value, q.tag)
            (False, (1.0, 'a'), (2.0, 'b'))
        """
        copy_ref = updates.pop("_copy_ref", True)  # False: a ref variable shares its refs
        new_value = self._raw_value if value is _MISSING else value
        updates = _placement.canonical_metadata(updates, type(self).__name__)
        metadata = {**self._metadata, **updates}
        if not copy_ref and _refs.holds_refs(new_value) and is_ref_mode(metadata):
            return _new_variable(type(self), new_value, metadata)
        return new_with_mode(type(self), new_value, metadata)

    def __copy__(self: V) -> V:
        return self.copy()

    def __deepcopy__(self: V, memo: dict) -> V:
        new = new_with_mode(type(self), copy.deepcopy(_refs.read(self._raw_value), memo),
                             copy.deepcopy(self._metadata, memo))
        memo[id(self)] = new
        return new

    def __getstate__(self) -> dict:
        return {"value": _refs.read(self._raw_value), "metadata": self._metadata}

    def __setstate__(self, state: dict) -> None:
        value = state["value"]
        if is_ref_mode(state["metadata"]):
            value = _refs.to_refs(value)
        object.__setattr__(self, "_raw_value", value)
        object.__setattr__(self, "_metadata", state["metadata"])
        object.__setattr__(self, "_nnx_stamp", _tracking.EPOCH[0])  # new: in no plan
        object.__setattr__(self, "_nnx_trace", _tracking.current_trace())

    def __hash__(self) -> int:
        return object.__hash__(self)

    def __eq__(self, other: Any) -> Any:  # elementwise, like arrays
        return self.value == _unbox(other)

    def __ne__(self, other: Any) -> Any:
        return self.value != _unbox(other)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        lines.append(f"  value={_short_repr(self._raw_value)},")
        for key, val in self._metadata.items():
            lines.append(f"  {key}={val!r},")
        lines.append(")")
        return "\n".join(lines)

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        return render_variable(self, path, subtree_renderer)


class _Escaped:
    """Stands in for the value of a variable whose transform has finished."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<escaped from a finished transform>"


ESCAPED = _Escaped()


def expire_variable(var: Variable) -> None:
    """Invalidate a variable built inside a transform once that transform is done."""
    object.__setattr__(var, "_raw_value", ESCAPED)
    object.__setattr__(var, "_nnx_trace", _tracking.EXPIRED)


def _escaped_error(var: Variable) -> Exception:
    return _tracking.TraceContextError(
        f"This {type(var).__name__} was created inside a transform (jit, grad, vmap, ...) "
        "and used after the transform returned; its value was a tracer of that finished "
        "trace. Hint: return the module (or its state) from the transformed function "
        "instead of storing it outside."
    )


def _unbox(x: Any) -> Any:
    return x.value if isinstance(x, Variable) else x


def _short_repr(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype") and np.size(value) > 8:
        return f"{type(value).__name__}(shape={tuple(value.shape)}, dtype={value.dtype})"
    return repr(value)


install_operators(Variable)


def _new_variable(cls: type[V], value: Any, metadata: dict, trace: Any = _MISSING) -> V:
    """Build a variable without running ``__init__`` (used by merge and unflatten)."""
    var = object.__new__(cls)
    _SET_VALUE(var, value)
    _SET_METADATA(var, metadata)
    _SET_STAMP(var, _tracking.EPOCH[0])
    _SET_TRACE(var, _tracking.current_trace() if trace is _MISSING else trace)
    return var


_SET_VALUE = Variable._raw_value.__set__  # type: ignore[attr-defined]
_SET_METADATA = Variable._metadata.__set__  # type: ignore[attr-defined]
_SET_STAMP = Variable._nnx_stamp.__set__  # type: ignore[attr-defined]
_SET_TRACE = Variable._nnx_trace.__set__  # type: ignore[attr-defined]
_SET_ORIGIN = Variable._nnx_origin.__set__  # type: ignore[attr-defined]




def put_raw(var: Variable, value: Any) -> None:
    """Store ``value`` as ``var``'s raw value: the slot of a plain variable, the refs of
    a ref-backed one (written in place). What graph updates and transforms write with.

    Example:
        >>> v = Param(1.0, ref=True)
        >>> put_raw(v, 2.0)
        >>> type(v.get_raw_value()).__name__, v[...].item()
        ('Ref', 2.0)
    """
    if var._metadata and is_ref_mode(var._metadata):
        var._put(value)
    else:
        _SET_VALUE(var, value)


def new_with_mode(cls: type[V], value: Any, metadata: dict) -> V:
    """A new variable holding its own copy of ``value`` in the storage ``metadata``
    asks for: fresh refs for ``ref``/``hijax``, the plain value otherwise.

    Example:
        >>> import jax
        >>> v = new_with_mode(Param, 1.0, {"ref": True})
        >>> isinstance(v.get_raw_value(), jax.Ref), v[...].item()
        (True, 1.0)
    """
    if _refs.holds_refs(value):
        value = _refs.read(value)
    if is_ref_mode(metadata):
        value = _refs.to_refs(value)
        HOOKS_IN_USE[0] = True
    return _new_variable(cls, value, metadata)


_NEW_WITH_MODE[0] = new_with_mode
__all__ += ["HijaxVariable"]
RefAux = _refs.RefAux


def _stored(var: Variable) -> Any:
    value = var._raw_value
    if value is ESCAPED:
        raise _escaped_error(var)
    return value


def _register_pytree(cls: type) -> None:
    # ``var.value`` (not the raw slot): an escaped variable raises its clear error here
    # instead of handing JAX a sentinel it cannot interpret.
    # The stored value, not a read (value hooks are for the user's reads, as in flax).
    # A ref-backed variable's aux also carries a weak reference to the variable, so that
    # the view JAX rebuilds inside a trace can hand a new leaf (a new dict key) back.
    def aux(var):
        frozen = freeze_metadata(var._metadata)
        return RefAux(frozen, origin_ref(var)) if is_ref_mode(var._metadata) else frozen

    def flatten(var):
        return (_stored(var),), aux(var)

    def flatten_with_keys(var):
        return ((jax.tree_util.GetAttrKey("value"), _stored(var)),), aux(var)

    def unflatten(frozen, children):
        # Trace None: a pytree-rebuilt variable is not tied to a trace (no check).
        if type(frozen) is RefAux:
            var = _new_variable(cls, children[0], thaw_metadata(frozen.frozen), None)
            if _refs.holds_refs(children[0]):
                _SET_ORIGIN(var, frozen.origin)
            return var
        return _new_variable(cls, children[0], thaw_metadata(frozen), None)

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)


class Param(Variable[A]):
    """A trainable parameter (collection ``'params'``).

    Example:
        >>> import jax.numpy as jnp
        >>> import nnxlib as nnx
        >>> nnx.variable_name_from_type(nnx.Param)
        'params'
    """


class BatchStat(Variable[A]):
    """A running statistic such as BatchNorm's mean (collection ``'batch_stats'``).

    Example:
        >>> import nnxlib as nnx
        >>> nnx.variable_name_from_type(nnx.BatchStat)
        'batch_stats'
    """


class Cache(Variable[A]):
    """Autoregressive decoding caches and similar (collection ``'cache'``).

    Example:
        >>> import nnxlib as nnx
        >>> nnx.variable_name_from_type(nnx.Cache)
        'cache'
    """


class Intermediate(Variable[A]):
    """Values recorded with ``Module.sow`` (collection ``'intermediates'``).

    Example:
        >>> import nnxlib as nnx
        >>> nnx.variable_name_from_type(nnx.Intermediate)
        'intermediates'
    """


class Perturbation(Intermediate[A]):
    """Zero-valued taps placed by ``Module.perturb`` (collection ``'perturbations'``); an
    :class:`Intermediate`, as in flax.nnx.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.variable_name_from_type(nnx.Perturbation), issubclass(nnx.Perturbation, nnx.Intermediate)
        ('perturbations', True)
    """


_register_pytree(Variable)


def register_variable_name(
    name: str, typ: type[Variable] | None = None, *, overwrite: bool = False
) -> Any:
    """Map collection ``name`` to variable type ``typ`` (both directions).

    Usable directly or as a class decorator.

    Example:
        >>> import nnxlib as nnx
        >>> @nnx.register_variable_name("counters", overwrite=True)
        ... class Counter(nnx.Variable):
        ...     pass
        >>> nnx.variable_name_from_type(Counter), nnx.variable_type_from_name("counters")
        ('counters', <class 'nnxlib.variables.Counter'>)
    """
    if typ is None:
        return lambda cls: register_variable_name(name, cls, overwrite=overwrite)
    if not (isinstance(typ, type) and issubclass(typ, Variable)):
        raise TypeError(f"register_variable_name: expected a Variable subclass, got {typ!r}")
    existing = _TYPE_OF_NAME.get(name)
    if existing is not None and existing is not typ and not overwrite:
        if name not in _AUTO_NAMES:  # names taken implicitly by a class may be reclaimed
            raise ValueError(
                f"Collection name {name!r} is already registered to {existing.__name__}. "
                "Hint: pass overwrite=True to re-register it."
            )
    old_name = _NAME_OF_TYPE.get(typ)
    if old_name is not None and _TYPE_OF_NAME.get(old_name) is typ:
        del _TYPE_OF_NAME[old_name]
    _NAME_OF_TYPE[typ] = name
    _TYPE_OF_NAME[name] = typ
    _AUTO_NAMES.discard(name)
    return typ


def variable_name_from_type(typ: type[Variable], /, *, allow_register: bool = False) -> str:
    """Return the collection name of a variable type (``Param`` -> ``'params'``).

    A subclass is registered under its own class name when it is defined, unless
    :func:`register_variable_name` gives it another.

    Example:
        >>> import nnxlib as nnx
        >>> class MyParam(nnx.Param):
        ...     pass
        >>> nnx.variable_name_from_type(nnx.BatchStat), nnx.variable_name_from_type(MyParam)
        ('batch_stats', 'MyParam')
    """
    name = _NAME_OF_TYPE.get(typ)
    if name is not None:
        return name
    if allow_register:
        return register_variable_name(typ.__name__, typ) and typ.__name__
    raise ValueError(
        f"{typ!r} has no collection name. Hint: register one with "
        "register_variable_name(name, typ)."
    )


def variable_type_from_name(
    name: str, /, *, base: type[Variable] = Variable, allow_register: bool = False
) -> type[Variable]:
    """Return the variable type registered for collection ``name``.

    With ``allow_register=True`` an unknown name creates and registers a new subclass of
    ``base``.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.variable_type_from_name("params") is nnx.Param
        True
        >>> nnx.variable_type_from_name("losses", allow_register=True).__name__
        'losses'
    """
    typ = _TYPE_OF_NAME.get(name)
    if typ is not None:
        return typ
    if not allow_register:
        raise ValueError(
            f"No variable type is registered for collection {name!r}; known names are "
            f"{sorted(_TYPE_OF_NAME)}. Hint: pass allow_register=True or call "
            "register_variable_name."
        )
    new_type = type(name, (base,), {"__module__": __name__})
    return register_variable_name(name, new_type, overwrite=True)


register_variable_name("params", Param)
register_variable_name("batch_stats", BatchStat)
register_variable_name("cache", Cache)
register_variable_name("intermediates", Intermediate)
register_variable_name("perturbations", Perturbation)
