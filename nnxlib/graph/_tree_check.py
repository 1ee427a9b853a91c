"""Tree mode's check: is a graph definition a tree (no object reachable twice)?

A :class:`~nnxlib.graph._graphdef.GraphDef` records a second path to an object as a ``ref``
definition, so the check is a walk over definitions, done once per ``GraphDef`` and
cached there (``GraphDef.shared_reference``).

Example:
    >>> import nnxlib as nnx
    >>> shared = nnx.Param(1.0)
    >>> first_shared(nnx.graphdef(nnx.List([shared, shared])).root)[1:]
    ((0,), (1,))
"""

from __future__ import annotations

from typing import Any, Iterator

from nnxlib.errors import SharedReferenceError, format_path

__all__ = ["walk_defs", "first_shared", "index_paths", "variable_kind", "compat_name",
           "check_tree", "NOT_WALKED"]


NOT_WALKED = object()  # GraphDef._shared before the first walk


def walk_defs(root: Any) -> Iterator[tuple[Any, tuple]]:
    """Yield ``(definition, path)`` depth first in attribute order: the order of the walk
    that numbered the objects, so an object's definition comes before its references.

    Example:
        >>> import nnxlib as nnx
        >>> [path for _, path in walk_defs(nnx.graphdef(nnx.List([nnx.Param(1.0)])).root)]
        [(), (0,)]
    """
    pending = [(root, ())]
    while pending:
        d, path = pending.pop()
        yield d, path
        if d.kind in ("node", "pytree"):
            pending.extend((child, path + (key,)) for key, child in reversed(d.attributes))


def first_shared(root: Any) -> tuple | None:
    """``(type, first path, second path)`` of the first object a definition reaches
    twice, or None for a tree.

    A reference to an object defined outside ``root`` (a definition split in a context
    that saw the object before) gives ``(None, None, path)``.

    Example:
        >>> import nnxlib as nnx
        >>> p = nnx.Param(1.0)
        >>> first_shared(nnx.graphdef(nnx.Dict(x=p, y=p)).root)
        (<class 'nnxlib.variables.Param'>, ('x',), ('y',))
    """
    defined: dict[int, tuple] = {}  # index -> (type, path of its definition)
    for d, path in walk_defs(root):
        if d.kind == "ref":
            typ, first = defined.get(d.index, (None, None))
            return typ, first, path
        if d.kind in ("node", "variable"):
            defined[d.index] = (d.type, path)
    return None


def index_paths(root: Any) -> dict[int, tuple]:
    """Where each object of a definition is defined: ``{index: path}``.

    Example:
        >>> import nnxlib as nnx
        >>> index_paths(nnx.graphdef(nnx.List([nnx.Param(1.0)])).root)
        {0: (), 1: (0,)}
    """
    return {d.index: path for d, path in walk_defs(root) if d.kind in ("node", "variable")}


def variable_kind(root: Any, index: int) -> str:
    """The name of the object defined at ``index`` when it is a variable, else of the
    first variable under it (flax.nnx names aliasing errors by the duplicate Variable).

    Example:
        >>> import nnxlib as nnx
        >>> d = nnx.graphdef(nnx.Dict(m=nnx.Dict(w=nnx.Param(1.0))))
        >>> variable_kind(d.root, 1)
        'Param'
    """
    for d, _ in walk_defs(root):
        if d.kind in ("node", "variable") and d.index == index:
            for inner, _ in walk_defs(d):
                if inner.kind == "variable":
                    return inner.type.__name__
            return d.type.__name__
    return "Variable"


def compat_name(where: str) -> str:
    """``"nnx.jit"`` -> ``"jit"``: the name under ``nnx.compat`` that hints point to.

    Example:
        >>> compat_name("nnx.jit")
        'jit'
    """
    return where.rsplit(".", 1)[-1]


def check_tree(graphdef: Any, where: str, root_labels: Any = None, root: str = "") -> None:
    """Raise :class:`SharedReferenceError` unless ``graphdef`` describes a tree.

    ``where`` names the call (``"nnx.jit"``); ``root_labels[i]`` names root ``i`` of a
    joint definition (``"args[0]"``), whose paths then start with the root number;
    otherwise ``root`` names the object itself in the message.

    Example:
        >>> import nnxlib as nnx
        >>> shared = nnx.Param(1.0)
        >>> try:
        ...     check_tree(nnx.graphdef(nnx.Dict(a=shared, b=shared)), "nnx.split")
        ... except nnx.errors.SharedReferenceError as error:
        ...     print(str(error).splitlines()[0])
        nnx.split(graph=False): `a` and `b` are the same Param; tree mode needs every object at one path (Duplicate Param found at paths `a` and `b`).
    """
    found = graphdef.shared_reference()
    if found is None:
        return
    typ, first, second = found
    if first is None:  # a reference out of this definition (a split context)
        raise SharedReferenceError(
            f"{where}(graph=False): `{format_path(second, root)}` refers to an object "
            "defined outside this graph definition (split earlier in the same context); "
            "tree mode needs every object at one path.\nHint: pass graph=True.")
    if root_labels is not None:
        first = (root_labels[first[0]], *first[1:])
        second = (root_labels[second[0]], *second[1:])
        first_s, second_s = format_path(first[1:], first[0]), format_path(second[1:], second[0])
    else:
        first_s, second_s = format_path(first, root), format_path(second, root)
    name = compat_name(where)
    duplicate = variable_kind(graphdef.root, _index_at(graphdef.root, found[1]))
    raise SharedReferenceError(
        f"{where}(graph=False): `{first_s}` and `{second_s}` are the same "
        f"{typ.__name__}; tree mode needs every object at one path (Duplicate "
        f"{duplicate} found at paths `{first_s}` and `{second_s}`).\n"
        f"Expected: a tree (each Variable and module reachable once). Actual: a shared "
        f"reference.\nHint: pass graph=True ({where}(..., graph=True), or "
        f"nnx.compat.{name}) to keep shared references, or nnx.clone one of them.")


def _index_at(root: Any, path: tuple) -> int:
    for d, p in walk_defs(root):
        if p == path and d.kind in ("node", "variable"):
            return d.index
    return -1
