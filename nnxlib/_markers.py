"""Class-level data/static markers: ``x: nnx.Data[int]`` and ``x: int = nnx.data()``.

A pure helper below the module layer: :class:`nnxlib.Object` asks :func:`class_markers`
once per class (at class creation) which attributes are marked, and applies
``nnx.data``/``nnx.static`` to values assigned to them.

Example:
    >>> import dataclasses
    >>> class Spec:
    ...     a: "nnx.Data[int]"              # as written with postponed annotations
    ...     b: int = dataclasses.field(default=0, metadata={MARKER_KEY: STATIC})
    >>> class_markers(Spec)
    {'a': 'data', 'b': 'static'}
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

__all__ = ["DATA", "STATIC", "MARKER_KEY", "class_markers"]

DATA = "data"
STATIC = "static"
MARKER_KEY = "nnxlib_marker"  # key in a dataclasses.field's metadata
# With ``from __future__ import annotations`` an annotation is a string such as
# "nnx.Data[int]": recognise the marker name by its spelling.
_STRING_MARKER = re.compile(r"(?:^|[.\s\[,])(Data|Static)\[")


def _marker_of_annotation(annotation: Any) -> str | None:
    if isinstance(annotation, str):
        found = _STRING_MARKER.search(annotation)
        return None if found is None else found.group(1).lower()
    if typing.get_origin(annotation) is typing.Annotated:
        for mark in annotation.__metadata__:
            if mark in (DATA, STATIC):
                return mark
    return None


def class_markers(cls: type) -> dict[str, str]:
    """Attribute name to ``"data"``/``"static"`` for ``cls`` and its bases.

    Example:
        >>> class Plain:
        ...     x: int
        >>> class_markers(Plain)
        {}
    """
    markers: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for name, annotation in klass.__dict__.get("__annotations__", {}).items():
            mark = _marker_of_annotation(annotation)
            if mark is not None:
                markers[name] = mark
        for name, value in klass.__dict__.items():
            if isinstance(value, dataclasses.Field) and MARKER_KEY in value.metadata:
                markers[name] = value.metadata[MARKER_KEY]
        for name, field in klass.__dict__.get("__dataclass_fields__", {}).items():
            if MARKER_KEY in field.metadata:
                markers[name] = field.metadata[MARKER_KEY]
    return markers
