"""Where nnxlib stands on each flax.nnx public name that is not simply "the same".

Keys are names under flax.nnx's defining module (``"graphlib.RefMap"``; top-level
names bare, ``"nn.attention.*"`` for a whole module). ``tests/test_flax_names.py``
fails on a flax.nnx name that nnxlib lacks unless it is in
``DELIBERATE_OMISSIONS`` or ``PENDING_FROM_OTHER_BRANCHES``, and on an entry there
that nnxlib now has. ``docs/compatibility.md`` is generated from these tables
(``python -m tests.test_flax_names``).

Example:
    >>> from nnxlib._compat_check import status_lookup
    >>> status_lookup(DELIBERATE_OMISSIONS, "graphlib.RefMap") == GRAPH_INTERNALS
    True
"""

# ------------------------------------------------------------------ pending
# Names other engineers are adding on their branches right now. The lead empties this
# list after merging them; never put a deliberate omission here.
_LAYERS = "layers branch"
_SHARDING = "spmd branch"
_BRIDGE = "bridge branch"
_TRAINING = "norm-training branch"
_OPEN = "not provided yet (open work)"
PENDING_FROM_OTHER_BRANCHES: dict[str, str] = {}

# ------------------------------------------------------------------ omitted
GRAPH_INTERNALS = (
    "part of flax's graph-walking machinery (node registries, index maps, definition "
    "records); nnxlib walks graphs its own way (docs/graph.md) and keeps that private")
TYPING_ONLY = (
    "a typing Protocol that only annotates flax's own function signatures; nothing to "
    "call")
HIJAX = (
    "flax's hijax variable machinery (custom JAX primitives, quasi-dynamic data); "
    "nnxlib's ref=True/hijax=True mode keeps each variable's value in public jax.Ref "
    "s instead (docs/plain_jax.md)")
REPR = ("flax's internal repr machinery; nnxlib prints with its own repr and treescope "
        "renderers (nnx.display)")
EXTRACT_INTERNALS = (
    "an internal helper of flax's transform implementation (prefix broadcasting, "
    "masking, aliasing checks); nnxlib's transforms are built differently")
PYTREE_INTERNALS = ("an internal of flax's Pytree class (metaclass, per-object state, "
                    "repr helpers); nnxlib's Object needs none of it")
AOT_STAGES = ("flax's stage classes of its graph_updates=False jit variants; nnxlib has one "
              "JitWrapped, whose trace/lower/compile give Traced/Lowered/Compiled in every "
              "mode")
BRIDGE_MODULE = (
    "flax's experimental bridge.Module: a second, Linen-style module system (scoped "
    "names, compact methods, lazy creation by name) built on flax.nnx, and its interop "
    "helpers for it. nnxlib has one module system; Linen code is used through "
    "bridge.ToNNX/ToLinen/lazy_init instead, which cover the same migrations")
SUMMARY_INTERNALS = (
    "a helper of flax's tabulate implementation (yaml dumpers, value reprs, byte "
    "counting, IPython detection); nnx.tabulate renders its own table and keeps its "
    "helpers private")
DELIBERATE_OMISSIONS = {
    # graphlib
    **{f"graphlib.{n}": GRAPH_INTERNALS for n in (
        "ArrayRefDef", "ArrayRefOutput", "DataElem", "GRAPH_CONTEXT", "GRAPH_REGISTRY",
        "GenericPytree", "GraphContext", "GraphNodeImpl", "IndexMap", "IndexesPytreeDef",
        "JAX_PYTREE_REGISTRY", "LEAF_ATTR", "LeafAttr", "NODE_ATTR", "NO_UPDATE",
        "NoUpdate", "NodeAttr", "NodeImplBase", "PYTREE_NODE_IMPL", "PYTREE_REGISTRY",
        "PythonRefMap", "PytreeNodeImpl", "REPEATED", "RefMap", "Repeated", "Static",
        "StaticCache", "StaticElem", "TreeNodeDef", "UpdateContextManager",
        "get_node_impl", "get_node_impl_for_type", "graph_pop", "is_node", "is_node_leaf",
        "is_node_module", "is_node_type", "is_pytree_node", "jax_to_nnx_path",
        "register_pytree_node_type", "static_cache",
    )},
    # bridge: flax's own Linen-style module system
    **{name: BRIDGE_MODULE for name in (
        "bridge.module", "bridge.module.*", "bridge.interop", "bridge.interop.*")},
    # summary (tabulate's internals)
    **{f"summary.{n}": SUMMARY_INTERNALS for n in (
        "ArrayRepr", "NoneDumper", "ObjectInfo", "SimpleObjectRepr", "SizeBytes",
        "filter_rng_streams", "in_ipython")},
    # extract
    **{f"extract.{n}": EXTRACT_INTERNALS for n in (
        "ExtractIndex", "GraphDefState", "Mask", "Opaque", "OrderedDict", "PrefixMapping",
        "Updates", "apply_updates", "broadcast_prefix", "broadcast_prefix2",
        "broadcast_prefix_map", "check_consistent_aliasing", "check_consistent_aliasing2",
        "check_no_aliases", "check_prefix", "check_same_variables",
        "clear_non_graph_nodes", "copy_var_structure", "default_split_fn", "extract",
        "filter_kwargs", "find", "from_tree2", "get_updates", "insert", "is_tree_node",
        "labeled", "mask_at", "merge_tree_node", "replace_at", "slice_at", "snapshot",
        "to_masked", "to_tree2", "treemap_copy_args", "update_carry_variables",
        "variable_changed",
    )},
    # pytreelib / module
    **{f"pytreelib.{n}": PYTREE_INTERNALS for n in (
        "ArrayRepr", "AttributeStatus", "BUILDING_DOCS", "DATA_REGISTRY", "DataAnnotation",
        "MutableArrayRepr", "OBJECT_CONTEXT", "ObjectContext", "ObjectMeta", "PytreeMeta",
        "PytreeState", "StaticAnnotation", "VariableRepr",
    )},
    "module.ModuleMeta": PYTREE_INTERNALS,
    # reprlib / visualization / statelib
    **{f"reprlib.{n}": REPR for n in (
        "Attr", "COLOR", "Color", "MappingReprMixin", "NO_COLOR", "Object", "PrettyMapping",
        "PrettySequence", "REPR_CONTEXT", "ReprContext", "Representable",
        "SequenceReprMixin", "colorized", "get_repr", "supports_color",
    )},
    "visualization.in_ipython": REPR,
    "visualization.render_object_constructor": REPR,
    "statelib.NestedStateRepr": REPR,
    # variablelib
    **{f"variablelib.{n}": HIJAX for n in (
        "AbstractVariable", "GetVariable", "HijaxVariableMeta",
        "NewVariable", "SetVariable", "VARIABLE_CONTEXT", "VarDefaultsContext",
        "VariableContext", "VariableEffect", "VariableMeta", "VariableQDD",
        "VariableTypeCache", "get_variable_p", "is_array_ref", "new_variable_p",
        "set_variable_p", "variable_effect",
    )},
    # optimizer
    "training.optimizer.MISSING": "flax's private sentinel for a missing argument",
    "training.optimizer.to_opt_state": (
        "converts an optax state to flax's OptState layout; nnxlib's Optimizer stores "
        "its state in its own layout (nnx.training.Optimizer) and needs no conversion"),
    # transforms: typing protocols and internals
    **{f"transforms.autodiff.{n}": TYPING_ONLY for n in (
        "BwdFn", "CustomVjpFnWrapper", "FwdFn", "GradFn", "SimpleBwdFn", "SimpleCustomVjp",
        "SimpleCustomVjpFn", "SimpleFwdFn", "SimpleGradFn", "SimpleJvpFn", "SimpleRematFn",
        "SimpleVjpFn",
    )},
    **{f"transforms.compilation.{n}": TYPING_ONLY for n in (
        "JitFn", "ShardMapFn", "SimpleJitFn", "SimpleJitPartialFn", "SimpleShardMapFn",
    )},
    **{f"transforms.compilation.{n}": AOT_STAGES for n in (
        "SimpleCompiled", "SimpleJitPartialWrapped",
        "SimpleJitWrapped", "SimpleLowered", "SimplePartialCompiled",
        "SimplePartialLowered", "SimplePartialTraced", "SimpleTraced",
    )},
    **{f"transforms.iteration.{n}": TYPING_ONLY for n in (
        "ForiLoopBodyFn", "PmapFn", "ScanFn", "SimpleForiLoopBodyFn", "SimplePmapFn",
        "SimpleScanFn", "SimpleVmapFn", "SimpleWhileLoopBodyFn", "SimpleWhileLoopCondFn",
        "VmapFn", "WhileLoopBodyFn", "WhileLoopCondFn",
    )},
    "transforms.iteration.Broadcasted": EXTRACT_INTERNALS,
    **{f"transforms.transforms.{n}": TYPING_ONLY for n in (
        "CheckifyFn", "SimpleCheckifyFn", "SimpleCondFn", "SimpleEvalShapeFn",
        "SimpleMakeJaxprFn",
    )},
    "transforms.transforms.LiftedModule": EXTRACT_INTERNALS,
    "transforms.transforms.ValueMetadata": EXTRACT_INTERNALS,
    "transforms.transforms.resolve_kwargs": EXTRACT_INTERNALS,
}

# ------------------------------------------------------------------ present, with a note
BETTER = {
    "set_graph_mode": (
        "tree mode runs nnxlib's cached fast path, so it is as fast as graph mode "
        "(benchmarks/tree_mode.py); StateAxes in vmap/scan axes work in tree mode too "
        "(flax.nnx raises); scoped values are per thread"),
    "jit": ("caches the graph walk: per call O(number of variables) Python work and the "
            "same compiled program as hand-written JAX (docs/performance.md)"),
    "List": "plain Python lists of modules work as attributes too (tracked as List)",
    "Dict": "plain Python dicts of modules work as attributes too (tracked as Dict)",
    "Variable": ("v[...] = x writes in place with broadcasting checks; metadata is free-form "
                 "and survives every transform; out_sharding works without a mesh (v.sharding "
                 "is then the value's one-device sharding, and None for a Python number, "
                 "where flax.nnx raises AttributeError); an old sharding/sharding_names key "
                 "contradicting out_sharding raises ShardingError (flax.nnx keeps the alias)"),
    "with_metadata": ("the on_* hooks work as in flax.nnx; reads and writes skip the hook "
                      "lookup entirely until some variable has a hook"),
    "with_partitioning": ("works without a mesh: sharding stays metadata until one is active; "
                          "on a mesh mixing Auto and Explicit axes a spec over axes of one "
                          "type is placed (flax.nnx refuses any mixed mesh; a spec naming "
                          "both types raises ShardingError, a ValueError, in both)"),
    "Dropout": ("under Explicit mesh axes the mask is sharded like the input, also when "
                "broadcast over a sharded dimension (where flax.nnx fails)"),
    "StateSharding": "a variable no filter matches is left unconstrained (flax.nnx raises)",
    "with_rngs": ("also with graph updates on (returns the copy; flax.nnx raises "
                  "NotImplementedError there)"),
    "tabulate": (
        "runs the model abstractly (jax.eval_shape: nothing is computed); outputs need not "
        "be arrays; a module's __call__ and another method with the same inputs are two "
        "rows (flax.nnx drops one); with flop columns each method body still runs once"),
}

DIFFERENT = {
    "get_partition_spec": (
        "under active logical_axis_rules a logical name is resolved to mesh axes as "
        "flax.linen does, and a name no rule maps becomes None (unsharded); flax.nnx "
        "leaves unmapped names in the spec"),
    "variables": ("nnxlib.variables is also the variables module (a callable module): "
                  "nnx.variables(model, nnx.Param) and nnx.variables.Param both work"),
    "var_defaults": ("ref=True and hijax=True both make new variables ref-backed (values "
                     "in jax.Refs; docs/plain_jax.md): one mode, where flax.nnx has two "
                     "implementations"),
    "with_vars": ("as flax.nnx (changed variables are copies, unchanged ones shared); "
                  "hijax=True is the ref-backed mode, and a write into a mutable=False "
                  "view raises ImmutableVariableError naming the path"),
    "variablelib.HijaxVariable": ("a check, not a class: isinstance(v, HijaxVariable) is "
                                  "v.hijax; variables keep their own kind (type(v) is "
                                  "Param)"),
    "vars_as": "as with_vars",
    "view": ("calls set_view where a module defines it, as flax.nnx; on the other modules "
             "(nnxlib's layers have no set_view except MultiHeadAttention) a keyword naming "
             "an attribute sets it"),
    "view_info": ("for a module class with set_view, its keywords and their docstring "
                  "descriptions, as flax.nnx; for the others, the mode flags nnx.view sets "
                  "(deterministic, use_running_average, decode)"),
    "iter_children": ("a plain list or dict of modules is an nnx.List/nnx.Dict graph node "
                      "in nnxlib, so it is a child too"),
    "pmap": ("built on the general split/merge lifting (a full walk per call) with an int "
             "or None per argument; prefer nnx.vmap with sharding"),
    "data": "a Python scalar marked as data becomes a JAX array (a state leaf)",
    "register_data_type": "values of the type become state leaves of the module",
    "pure": "same as as_pure (flax deprecates pure)",
    "compat": ("nnx.compat.X is nnx.X called with graph=True (and graph_updates=True for "
               "transforms) unless the caller passes them"),
    "set_graph_updates": (
        "with graph_updates=False (and in tree mode) a structural change made inside a "
        "transform (new attribute, sow, replaced submodule) raises GraphStructureError "
        "naming the path; flax.nnx drops it silently"),
    "fori_loop": ("returns the caller's objects, updated in place, in both modes; flax.nnx's "
                  "tree mode returns new objects holding the same values (the caller's "
                  "are updated there too)"),
    "while_loop": "as fori_loop",
    "grad": ("tree mode (graph=False): an int argnum differentiates every variable and "
             "returns a module of gradients, as in flax.nnx; a DiffState argnum (which "
             "flax.nnx rejects in tree mode) keeps its filter and returns a State"),
    "reprlib": "an alias of nnxlib's display module; flax's repr helpers are omitted",
    "visualization": "an alias of nnxlib's display module",
    "graphlib.flatten": ("nnx.flatten and nnx.graphlib.flatten are flax's; "
                         "nnx.graph.flatten is nnxlib's internal graph walker"),
    "graphlib.unflatten": ("nnx.unflatten and nnx.graphlib.unflatten are flax's; "
                           "nnx.graph.unflatten is nnxlib's internal graph walker"),
    "graph": ("nnx.graph is nnxlib's graph module; flax's other graph names are served "
              "from it too (as nnx.graphlib's)"),
    "split_context": ("objects seen in an earlier split of the same context are described "
                      "again in full (same index), so each pair also merges on its own"),
    "UpdateContext": "the four calls must come in order: split, merge, split, merge",
    "update": ("a state whose shapes differ from the model's raises StateMismatchError "
               "naming the path; flax.nnx writes the new shapes in. Static values at "
               "existing paths are replaced, as flax.nnx; a path the graph does not have "
               "raises (flax.nnx adds it)"),
    "Rngs": ("a stream passed in, or one Rngs.split/broadcast leave alone, is the same "
             "stream in the new Rngs; flax.nnx makes a new stream whose count restarts at "
             "0 (handing out keys already drawn)"),
    "fork_rngs": ("with a mapping, a stream is forked by the first filter that matches it "
                  "(flax.nnx forks it once per matching filter)"),
    "bridge.wrappers.ToNNX": (
        "outside Linen, a call writes back every collection but params by default (flax.nnx: "
        "nothing, mutable=False); as in flax.nnx parameters come from lazy_init only"),
    "spmd.add_axis": ("a negative index counts from the end of the result, as "
                      "jnp.expand_dims does (-1: the new axis is last); flax inserts "
                      "before the last existing entry"),
    "spmd.get_var_pspec": ("resolves logical names as nnx.get_partition_spec does "
                           "(flax.linen precedence: where rules are given, a name no rule "
                           "maps is replicated); flax.nnx keeps such a name as it is"),
}
