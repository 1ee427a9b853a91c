"""Interoperability between nnxlib and Flax Linen.

* :class:`ToNNX` / :func:`lazy_init`: a Linen module used as an nnxlib module;
* :class:`ToLinen` / :func:`to_linen` / :func:`to_linen_class`: an nnxlib module used as a
  Linen module;
* :mod:`bridge.variables`: variables and their metadata (``nn.Partitioned``,
  ``nn.LogicallyPartitioned``) converted both ways without loss;
* :func:`load_linen_variables`: a Linen checkpoint put into an nnxlib model;
* :func:`functional` / :class:`Functional`: an nnxlib module class used through pure
  ``init``/``apply`` calls.

flax.nnx also reaches the Linen wrappers as ``nnx.wrappers`` and ``nnx.bridge.wrappers``;
both are this package here (``nnxlib.wrappers is nnxlib.bridge``).

This package is also ``nnxlib.bridge`` (imported on first use, so that ``import nnxlib``
never imports flax). It is the only part of the project that imports ``flax``, and it
uses ``flax.linen`` (plus ``flax.errors``) only.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import flax.linen as nn
    >>> import nnxlib as nnx
    >>> model = nnx.bridge.ToNNX(nn.Dense(2), rngs=nnx.Rngs(0)).lazy_init(jnp.ones((1, 3)))
    >>> model(jnp.ones((4, 3))).shape
    (4, 2)
"""

import sys as _sys

from bridge.checkpoints import load_linen_variables
from bridge.context import current_linen_module, linen_rngs_dict
from bridge.functional import Functional, functional
from bridge.linen_in_nnx import ToNNX, lazy_init
from bridge.nnx_in_linen import ToLinen, linen_name, to_linen, to_linen_class
from bridge.variables import (
    PARTITION_NAME,
    NNXMeta,
    get_col_name,
    is_vanilla_variable,
    linen_vars_to_nnx_attrs,
    nnx_attrs_to_linen_vars,
    sort_variable_types,
    to_linen_var,
    to_nnx_var,
    variable_to_logically_partitioned,
    with_partitioning,
)

# flax.nnx's module path for the wrappers (nnx.bridge.wrappers): this package itself.
wrappers = _sys.modules[__name__]

__all__ = [
    "ToNNX",
    "lazy_init",
    "ToLinen",
    "to_linen",
    "to_linen_class",
    "linen_name",
    "current_linen_module",
    "linen_rngs_dict",
    "load_linen_variables",
    "functional",
    "Functional",
    "sort_variable_types",
    "NNXMeta",
    "PARTITION_NAME",
    "is_vanilla_variable",
    "to_linen_var",
    "to_nnx_var",
    "get_col_name",
    "linen_vars_to_nnx_attrs",
    "nnx_attrs_to_linen_vars",
    "with_partitioning",
    "variable_to_logically_partitioned",
]
