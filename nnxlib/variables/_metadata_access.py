"""Reading and writing a variable's metadata: ``get_metadata``/``set_metadata``, and
flax.nnx's required keys (``hijax``, ``ref``, ``eager_sharding``) with their defaults.

A variable stores a required key only when it differs from its default (graph
definitions and reprs stay small); :func:`creation_options` is what a variable created
now stores (``nnx.var_defaults``, ``use_eager_sharding``).

Example:
    >>> import nnxlib as nnx
    >>> p = nnx.Param(0.0, note="tied")
    >>> p.get_metadata("note"), p.get_metadata("ref")
    ('tied', False)
"""

from __future__ import annotations

from typing import Any

from nnxlib.variables import _placement, _tracking
from nnxlib.variables._defaults import default_hijax, default_ref
from nnxlib.variables._metadata import note_hooks

__all__ = ["DEFAULT_METADATA", "default_metadata", "creation_options", "MetadataAccess"]

_MISSING = object()

# Metadata every flax.nnx variable carries. A variable stores one of these only when it
# differs from its default (so graph definitions and reprs stay small); the options in
# force at creation (``nnx.var_defaults``, ``use_eager_sharding``) are stored then.
DEFAULT_METADATA = {"hijax": False, "ref": False, "eager_sharding": True}


def default_metadata(name: str) -> Any:
    """The value of one of :data:`DEFAULT_METADATA` for a variable that does not store it.

    Example:
        >>> default_metadata("eager_sharding"), default_metadata("ref")
        (True, False)
    """
    return DEFAULT_METADATA[name]


def creation_options() -> dict[str, bool]:
    """The variable options in force now that differ from :data:`DEFAULT_METADATA`:
    what a variable created here stores.

    Example:
        >>> import nnxlib as nnx
        >>> creation_options()
        {}
        >>> with nnx.var_defaults(hijax=True, eager_sharding=False):
        ...     creation_options()
        {'hijax': True, 'eager_sharding': False}
    """
    options = {}
    if default_hijax.current():
        options["hijax"] = True
    if default_ref.current():
        options["ref"] = True
    if not _placement.using_eager_sharding():
        options["eager_sharding"] = False
    return options



class MetadataAccess:
    """The metadata methods of :class:`~nnxlib.variables.Variable` (a mixin: the class
    holds ``_metadata``, ``_nnx_trace``).

    Example:
        >>> import nnxlib as nnx
        >>> issubclass(nnx.Variable, MetadataAccess)
        True
    """

    __slots__ = ()

    def get_metadata(self, name: str | None = None, default: Any = _MISSING, *,
                     exclude_required: bool | None = None) -> Any:
        """Return a copy of the metadata dict, or the entry ``name`` (``default``, or a
        ``KeyError``, when it is missing).

        flax.nnx's required keys (``hijax``, ``ref``, ``eager_sharding``) are in the
        dict even when they were not given (a variable stores one only when it differs
        from the default); ``exclude_required=True`` leaves them out.

        Example:
            >>> import nnxlib as nnx
            >>> p = nnx.Param(0.0, out_sharding=("embed",))
            >>> p.get_metadata()
            {'out_sharding': ('embed',), 'hijax': False, 'ref': False, 'eager_sharding': True}
            >>> p.get_metadata("out_sharding")
            ('embed',)
            >>> p.get_metadata(exclude_required=True)
            {'out_sharding': ('embed',)}
        """
        if name is None:
            if default is not _MISSING:
                raise TypeError(
                    f"get_metadata(default={default!r}) without a name: a default goes "
                    "with one key. Hint: get_metadata(name, default).")
            metadata = dict(self._metadata)
            for key in DEFAULT_METADATA:
                if exclude_required:
                    metadata.pop(key, None)
                else:
                    metadata.setdefault(key, default_metadata(key))
            return metadata
        if exclude_required is not None:
            raise TypeError(
                f"get_metadata({name!r}, exclude_required=...): exclude_required selects "
                "keys of the whole metadata dict. Hint: call get_metadata(exclude_required"
                "=...) without a name, or get_metadata(name) without exclude_required.")
        if name in self._metadata:
            return self._metadata[name]
        if name in DEFAULT_METADATA:  # flax.nnx's default keys, read without storing
            return default_metadata(name)
        if default is _MISSING:
            return self._metadata[name]
        return default

    def set_metadata(self, *args: Any, **metadata: Any) -> None:
        """Set metadata (a structural change): ``set_metadata(dict)`` replaces all of it
        (the mode options ``hijax``/``ref``/``eager_sharding`` stay and cannot change),
        ``set_metadata(name, value)`` and ``set_metadata(**updates)`` update it.

        Example:
            >>> import nnxlib as nnx
            >>> p = nnx.Param(0.0)
            >>> p.set_metadata(out_sharding=("embed",))
            >>> p.set_metadata("note", "tied")
            >>> p.out_sharding, p.note
            (('embed',), 'tied')
            >>> p.set_metadata({"note": "untied"})
            >>> p.get_metadata(exclude_required=True)
            {'note': 'untied'}
        """
        replace = len(args) == 1
        if len(args) == 2 and isinstance(args[0], str):
            args = ({args[0]: args[1]},)
        if len(args) > 1 or (args and not isinstance(args[0], dict)):
            raise TypeError(
                "set_metadata takes one positional dict, or a name and a value, or "
                f"keywords; got positional {args!r}. Hint: set_metadata(name=value)."
            )
        if args and metadata:
            raise TypeError(
                f"set_metadata: got the positional {args[0]!r} and the keywords "
                f"{sorted(metadata)} (Cannot mix positional and keyword arguments in "
                "set_metadata): a dict replaces all metadata, keywords update it. Hint: "
                "merge them into one dict, or make two calls."
            )
        updates = _placement.canonical_metadata(args[0] if args else metadata,
                                                type(self).__name__)
        trace = self._nnx_trace
        if trace is not None and trace != _tracking.current_trace():
            _tracking.check_trace(self, "change the metadata")
        if replace:
            for key in DEFAULT_METADATA:
                if key in updates and updates[key] != getattr(self, key):
                    raise ValueError(
                        f"set_metadata on this {type(self).__name__}: Cannot change `{key}` "
                        f"metadata, expected {getattr(self, key)!r}, got {updates[key]!r}. "
                        "Hint: the mode is fixed when the variable is created; make a new "
                        "one (e.g. with nnx.var_defaults) to change it."
                    )
            kept = {k: v for k, v in self._metadata.items() if k in DEFAULT_METADATA}
            updates = {k: v for k, v in updates.items() if k not in DEFAULT_METADATA}
            note_hooks(updates)
            object.__setattr__(self, "_metadata", {**kept, **updates})
        else:
            note_hooks(updates)
            object.__setattr__(self, "_metadata", {**self._metadata, **updates})
        _tracking.structure_changed(self)
