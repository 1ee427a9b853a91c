"""Display: treescope rendering of modules, variables and states, and ``display``.

Modules render as constructor calls of their attributes, variables with their value and
metadata, states as nested mappings; shared references are shown once by treescope.

Example:
    >>> import treescope
    >>> import nnxlib as nnx
    >>> print(treescope.render_to_text(nnx.State({"w": nnx.Param(1.0, out_sharding=("a",))})))
    State({'w': Param(value=1.0, out_sharding=('a',))})
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["display", "render_to_html", "render_object", "render_variable", "render_state"]


def render_object(obj: Any, attributes: dict, path: str | None,
                  subtree_renderer: Any) -> Any:
    """treescope hook for modules and other graph objects (``attributes`` in order)."""
    from treescope import repr_lib

    return repr_lib.render_object_constructor(
        object_type=type(obj), attributes=attributes, path=path,
        subtree_renderer=subtree_renderer, roundtrippable=False)


def render_variable(var: Any, path: str | None, subtree_renderer: Any) -> Any:
    """treescope hook for variables: the value, then each metadata entry."""
    from treescope import repr_lib

    return repr_lib.render_object_constructor(
        object_type=type(var), attributes={"value": var._raw_value, **var._metadata},
        path=path, subtree_renderer=subtree_renderer, roundtrippable=False)


def render_state(state: Any, path: str | None, subtree_renderer: Any) -> Any:
    """treescope hook for :class:`~nnxlib.state.State`: a nested mapping."""
    from treescope import repr_lib

    return repr_lib.render_dictionary_wrapper(
        object_type=type(state), wrapped_dict=dict(state._nested()), path=path,
        subtree_renderer=subtree_renderer, roundtrippable=False)


def render_to_html(value: Any) -> str:
    """Render ``value`` with treescope and return standalone HTML.

    Example:
        >>> import nnxlib as nnx
        >>> "<" in nnx.display.render_to_html(nnx.Param(1.0))
        True
    """
    import treescope

    return treescope.render_to_html(value)


def display(*values: Any) -> None:
    """Show values: rich treescope output in a notebook, ``repr`` text elsewhere.

    Example:
        >>> import nnxlib as nnx
        >>> nnx.display(nnx.Param(1.0))
        Param(
          value=1.0,
        )
    """
    in_notebook = "IPython" in sys.modules and _has_ipython_kernel()
    for value in values:
        if in_notebook:
            import treescope

            treescope.display(value)
        else:
            print(repr(value))


def _has_ipython_kernel() -> bool:
    try:
        from IPython import get_ipython  # type: ignore[import-not-found]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")
