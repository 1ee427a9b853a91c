"""flax.nnx's module layout on top of nnxlib's: submodule aliases and extra names.

flax.nnx users reach names through module paths (``nnx.rnglib.RngStream``,
``nnx.graph.SplitContext``, ``from flax.nnx.statelib import restore_int_paths``).
nnxlib keeps one idea per file, so some of those names live elsewhere. This module,
run once at the end of ``nnxlib/__init__.py``:

* makes the flax module names attributes of the package (``nnx.rnglib`` is
  ``nnxlib.rngs``) and importable (``import nnxlib.rnglib``);
* lets a module answer for names flax keeps there (``nnxlib.graph.SplitContext``)
  through the module's ``__getattr__``, so nothing is added to the module's globals
  (an injected ``map`` would shadow the builtin inside ``nnxlib.graph``);
* makes ``nnxlib.variables`` callable: ``nnx.variables(model, nnx.Param)`` is the
  graph function, while ``nnx.variables.Param`` and ``from nnxlib.variables import
  Param`` keep working.

Example:
    >>> import nnxlib as nnx
    >>> nnx.rnglib.RngStream is nnx.RngStream, nnx.graph.SplitContext is nnx.SplitContext
    (True, True)
    >>> sorted(nnx.variables(nnx.Linear(1, 1, rngs=nnx.Rngs(0)), nnx.Param))
    ['bias', 'kernel']
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from nnxlib.nn import initializers
from nnxlib.training import optimizer, train_state
from nnxlib.transforms import (
    abstract,
    autodiff,
    compilation,
    custom_gradient,
    general,
    iteration,
    vjp_jvp,
)
from nnxlib.transforms import transforms as transforms_module
from nnxlib.transforms.axes import PARTITION_NAME
from nnxlib.transforms.remat import remat


def _mod(name: str) -> types.ModuleType:
    # Some package attributes are functions of the same name (nnx.state, nnx.display):
    # take the modules themselves.
    return importlib.import_module(f"nnxlib.{name}")


(compat, deprecations, display, extract, filters, graph, graph_flat, graphlib, helpers,
 module, module_tools, proxy_caller, pytreelib, rng_tools, rngs, state, state_tools,
 tracers, traversals, var_options, variables) = map(_mod, (
    "compat", "deprecations", "display", "extract", "filters", "graph", "graph.flat",
    "graphlib", "helpers", "module", "module_tools", "proxy_caller", "pytreelib",
    "rng_tools", "rngs", "state", "graph.state_tools", "tracers", "traversals", "var_options",
    "variables"))

summary_module = importlib.import_module("nnxlib.training.tabulate")

# flax.nnx submodule name -> nnxlib module.
ALIASES = {
    "rnglib": rngs,
    "variablelib": variables,
    "statelib": state,
    "graphlib": graphlib,
    "filterlib": filters,
    "helpers": helpers,
    "object": pytreelib,
    "pytreelib": pytreelib,
    "traversals": traversals,
    "visualization": display,
    "reprlib": display,
    "optimizer": optimizer,
    "tracers": tracers,
    "deprecations": deprecations,
    "extract": extract,
    "proxy_caller": proxy_caller,
    "compat": compat,
    "summary": summary_module,
}

_spmd = _mod("spmd")

# Names flax.nnx has in a module that nnxlib defines in another file.
_nn_linear = importlib.import_module("nnxlib.nn.linear")
_nn_normalization = importlib.import_module("nnxlib.nn.normalization")
_conv = importlib.import_module("nnxlib.nn.conv")
_embed = importlib.import_module("nnxlib.nn.embed")
_weight_norm = importlib.import_module("nnxlib.nn.weight_norm")

EXTRA_NAMES: dict[types.ModuleType, dict[str, Any]] = {
    _nn_linear: {"Conv": _conv.Conv, "ConvTranspose": _conv.ConvTranspose,
                 "canonicalize_padding": _conv.canonicalize_padding,
                 "Embed": _embed.Embed},
    _nn_normalization: {"SpectralNorm": _weight_norm.SpectralNorm,
                        "WeightNorm": _weight_norm.WeightNorm},
    _spmd: {"get_abstract_model": abstract.get_abstract_model,
            "abstract_with_sharding": abstract.abstract_with_sharding,
            "as_abstract": abstract.as_abstract, "PARTITION_NAME": PARTITION_NAME},
    compat: {"get_abstract_model": abstract.get_abstract_model},
    helpers: {"TrainState": train_state.TrainState},
    graph: {name: getattr(graphlib, name) for name in graphlib.__all__},
    module: {name: getattr(module_tools, name) for name in module_tools.__all__},
    state: {name: getattr(state_tools, name) for name in state_tools.__all__},
    rngs: {name: getattr(rng_tools, name) for name in rng_tools.__all__},
    variables: {"use_eager_sharding": _spmd.use_eager_sharding,
                "using_eager_sharding": _spmd.using_eager_sharding,
                "var_defaults": var_options.var_defaults,
                "VarDefaults": var_options.VarDefaults,
                "VariableState": variables.Variable},  # flax's older name of Variable
    autodiff: {"custom_vjp": custom_gradient.custom_vjp, "CustomVjp": custom_gradient.CustomVjp,
               "vjp": vjp_jvp.vjp, "jvp": vjp_jvp.jvp, "remat": remat},
    display: {"display": display.display},
}


def _answer_for(mod: types.ModuleType, extra: dict[str, Any]) -> None:
    previous = mod.__dict__.get("__getattr__")

    def __getattr__(name: str) -> Any:
        if name in extra:
            return extra[name]
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module {mod.__name__!r} has no attribute {name!r}")

    mod.__getattr__ = __getattr__  # type: ignore[attr-defined]


class _CallableVariablesModule(types.ModuleType):
    """``nnxlib.variables``: the variables module, callable as ``nnx.variables(...)``."""

    def __call__(self, node: Any, *filters: Any, graph: bool | None = None) -> Any:
        return graph_flat.variables(node, *filters, graph=graph)


def install(nnxlib: types.ModuleType) -> None:
    """Install the aliases on the package ``nnxlib`` (idempotent). The package passes
    itself in, so this module does not import it back (no import cycle).

    Example:
        >>> import nnxlib
        >>> from nnxlib import _module_paths
        >>> _module_paths.install(nnxlib)
        >>> import nnxlib.statelib
        >>> from nnxlib.statelib import restore_int_paths
        >>> nnxlib.statelib.State is nnxlib.State, restore_int_paths is nnxlib.restore_int_paths
        (True, True)
    """
    for name, target in ALIASES.items():
        setattr(nnxlib, name, target)
        sys.modules.setdefault(f"nnxlib.{name}", target)
    for mod, extra in EXTRA_NAMES.items():
        if not getattr(mod, "_nnx_extra_installed", False):
            _answer_for(mod, extra)
            mod._nnx_extra_installed = True  # type: ignore[attr-defined]
    variables.__class__ = _CallableVariablesModule
    nnxlib.initializers = initializers
    # the transforms' flax module paths, as package attributes
    for sub in (compilation, general, iteration, transforms_module):
        setattr(nnxlib.transforms, sub.__name__.rpartition(".")[2], sub)
