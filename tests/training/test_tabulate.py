"""nnx.tabulate: rows per method call, shapes, counts and bytes per variable kind,
totals, flop columns; the same table as flax.nnx; the model is left unchanged; rich is
imported only when tabulate runs."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnxlib as nnx


class Block(nnx.Module):
    def __init__(self, din, dout, rngs):
        self.linear = nnx.Linear(din, dout, rngs=rngs)
        self.bn = nnx.BatchNorm(dout, rngs=rngs)
        self.dropout = nnx.Dropout(0.2, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.dropout(self.bn(self.linear(x))))


class Net(nnx.Module):
    def __init__(self, rngs):
        self.block1 = Block(32, 128, rngs)
        self.block2 = Block(128, 10, rngs)

    def __call__(self, x):
        return self.block2(self.block1(x))

    def features(self, x, *, scale=1.0):
        return {"h": self.block1(x) * scale}


def _snapshot(model) -> list:
    def raw(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)
    return [raw(x) for x in jax.tree.leaves(nnx.state(model))]


def _rows(table: str) -> list[list[str]]:
    """The first text line of each table row, split into cells."""
    rows = []
    for line in table.splitlines():
        if line.startswith("│"):
            rows.append([c.strip() for c in line.strip("│").split("│")])
    return rows


def test_rows_shapes_counts_and_totals():
    model = Net(nnx.Rngs(0))
    before = _snapshot(model)
    table = nnx.tabulate(model, jnp.ones((1, 32)))
    header = next(line for line in table.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.strip("┃").split("┃")] == [
        "path", "type", "inputs", "outputs", "BatchStat", "Param", "RngState"]
    rows = [r for r in _rows(table) if r[1] or r[3] == "Total"]
    assert [(r[0], r[1]) for r in rows] == [
        ("", "Net"), ("block1", "Block"), ("block1/linear", "Linear"), ("block1/bn", "BatchNorm"),
        ("block1/dropout", "Dropout"), ("block2", "Block"), ("block2/linear", "Linear"),
        ("block2/bn", "BatchNorm"), ("block2/dropout", "Dropout"), ("", "")]
    by_path = {r[0] or r[1]: r for r in rows}
    assert by_path["Net"][2:4] == ["float32[1,32]", "float32[1,10]"]
    assert by_path["block1"][3] == "float32[1,128]"
    # 32*128 + 128 + 2*128 + 128*10 + 10 + 2*10 parameters, 4 bytes each
    assert by_path["Net"][5] == "5,790 (23.2 KB)"
    assert by_path["block1"][4] == "256 (1.0 KB)"                 # mean + var of 128
    assert by_path["block1/linear"][5] == "bias: float32[128]"     # its own variables
    assert by_path["block1"][5] == "4,480 (17.9 KB)"                # none of its own
    total = rows[-1]
    assert total[3:] == ["Total", "276 (1.1 KB)", "5,790 (23.2 KB)", "4 (24 B)"]
    assert "Total Parameters: 6,070 (24.3 KB)" in table            # every variable
    for a, b in zip(before, _snapshot(model)):
        np.testing.assert_array_equal(a, b)     # no statistics or RNG counts moved


def test_method_kwargs_depth_and_row_filter():
    model = Net(nnx.Rngs(0))
    table = nnx.tabulate(model, jax.ShapeDtypeStruct((4, 32), jnp.float32), method="features",
                         scale=2.0, depth=1)
    rows = [r for r in _rows(table) if r[1]]
    assert [r[0] for r in rows] == ["features", "block1"]    # depth counts the method
    assert rows[0][2] == "- float32[4,32]" and rows[0][3] == "h: float32[4,128]"
    assert "scale: 2.0" in table                             # kwargs on their own line
    only_bn = nnx.tabulate(model, jnp.ones((1, 32)),
                           row_filter=lambda c: c.type is nnx.BatchNorm)
    assert [r[0] for r in _rows(only_bn) if r[1]] == ["block1/bn", "block2/bn"]


def test_shared_module_called_twice_alike_has_one_row():
    class Twice(nnx.Module):
        def __init__(self, rngs):
            self.layer = nnx.Linear(3, 3, rngs=rngs)
            self.alias = self.layer

        def __call__(self, x):
            return self.alias(self.layer(x))

    rows = [r for r in _rows(nnx.tabulate(Twice(nnx.Rngs(0)), jnp.ones((2, 3)))) if r[1]]
    assert [r[1] for r in rows] == ["Twice", "Linear"]   # same module, same input shapes
    assert rows[0][4] == "12 (48 B)"                   # shared parameters counted once


def test_bad_method_is_a_clear_error():
    with pytest.raises(AttributeError, match=r"Net has no method 'predict'.*Hint"):
        nnx.tabulate(Net(nnx.Rngs(0)), jnp.ones((1, 32)), method="predict")


def test_rich_is_imported_only_when_tabulate_runs_and_missing_rich_is_explained():
    code = (
        "import sys, jax.numpy as jnp\n"
        "import nnxlib as nnx\n"
        "assert 'rich' not in sys.modules\n"
        "sys.modules['rich'] = None\n"      # make `import rich` fail
        "try:\n"
        "    nnx.tabulate(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), jnp.ones((1, 2)))\n"
        "except ImportError as e:\n"
        "    assert 'pip install' in str(e), e\n"
        "    print('explained')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "explained" in out.stdout


def test_flop_columns_count_the_matmuls():
    model = nnx.Linear(8, 4, use_bias=False, rngs=nnx.Rngs(0))
    table = nnx.tabulate(model, jnp.ones((2, 8)), compute_flops=True, compute_vjp_flops=True)
    header = next(line for line in table.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.strip("┃").split("┃")][:6] == [
        "path", "type", "inputs", "outputs", "flops", "vjp_flops"]
    row = [r for r in _rows(table) if r[1] == "Linear"][0]
    flops, vjp_flops = (float(c.replace(",", "")) for c in row[4:6])
    assert flops == 2 * 2 * 8 * 4               # one (2, 8) @ (8, 4) matmul
    assert vjp_flops >= 3 * flops               # forward + two backward matmuls


# ------------------------------------------------------------------ as flax.nnx
def _flax_and_ours(build, *args, **kwargs):
    from flax import nnx as fnnx
    console = dict(force_terminal=False, no_color=True, width=10_000)
    return [lib.tabulate(build(lib), *args, console_kwargs=console, **kwargs)
            for lib in (nnx, fnnx)]


def _foo(lib):
    class Block(lib.Module):
        def __init__(self, din, dout, rngs):
            self.linear = lib.Linear(din, dout, rngs=rngs)
            self.bn = lib.BatchNorm(dout, rngs=rngs)
            self.dropout = lib.Dropout(0.2, rngs=rngs)

        def forward(self, x):
            return lib.relu(self.dropout(self.bn(self.linear(x))))

    class Foo(lib.Module):
        def __init__(self, rngs):
            self.block1 = Block(32, 128, rngs)
            self.block2 = Block(128, 10, rngs)

        def __call__(self, x):
            return self.block2.forward(self.block1.forward(x))

    return Foo(lib.Rngs(0))


def test_same_table_as_flax_for_methods_containers_and_metadata():
    ours, theirs = _flax_and_ours(_foo, jnp.ones((1, 32)))
    assert ours == theirs
    assert "block1/forward" in ours

    def custom(lib):
        class Model(lib.Module):
            def __init__(self):
                self.w = lib.Param(jnp.ones((4, 8)))
                self.w.set_metadata("description", "weights")
                self.b = lib.Param(jnp.ones(8))

            def sub(self, foo, x, *, opt=None):
                return x

            def __call__(self, x, x2):
                self.sub({}, x, opt={})
                self.sub(x, None, opt=None)
                y = x @ self.w[...] + self.b[...] + x2
                return x, y, {"double": 2 * y}

        return Model()

    ours, theirs = _flax_and_ours(custom, jnp.ones((1, 4)), jnp.ones((1, 8)))
    assert ours == theirs
    assert "- {}" in ours and "opt: None" in ours and "description: weights" in ours


def test_shared_module_counts_under_its_first_path():
    ours, theirs = _flax_and_ours(_shared, jnp.ones((4, 2)))
    assert ours == theirs
    rows = [r for r in _rows(ours) if r[1]]
    assert [r[0] for r in rows] == ["", "block1", "block1/linear", "block1/bn", "block2",
                                    "block2/bn"]


def _shared(lib):
    class Block(lib.Module):
        def __init__(self, linear, rngs):
            self.linear = linear
            self.bn = lib.BatchNorm(2, rngs=rngs)

        def __call__(self, x):
            return lib.relu(self.bn(self.linear(x)))

    class Model(lib.Module):
        def __init__(self, rngs):
            shared = lib.Linear(2, 2, rngs=rngs)
            self.block1 = Block(shared, rngs)
            self.block2 = Block(shared, rngs)

        def __call__(self, x):
            return self.block2(self.block1(x))

    return Model(lib.Rngs(0))


def test_a_method_and_call_of_one_module_are_two_rows():
    class Model(nnx.Module):
        def g(self, x):
            return x ** 2

        def __call__(self, x):
            return self.g(x)

    table = nnx.tabulate(Model(), jnp.ones(4), compute_flops=True)
    assert [r[0] for r in _rows(table) if r[1]] == ["", "g"]   # flax.nnx drops the first


# ------------------------------------------------------------------ flops: one run each
class Counted(nnx.Module):
    runs = []

    def __init__(self, depth, rngs):
        self.linear = nnx.Linear(4, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, use_running_average=False, rngs=rngs)
        self.child = Counted(depth - 1, rngs) if depth > 1 else None

    def __call__(self, x):
        Counted.runs.append(1)
        x = self.bn(self.linear(x))
        return self.child(x) if self.child is not None else x


@pytest.mark.parametrize("depth", [1, 6])
def test_flops_run_each_method_body_once(depth):
    model = Counted(depth, nnx.Rngs(0))
    before = _snapshot(model)
    Counted.runs.clear()
    table = nnx.tabulate(model, jnp.ones((2, 4)), compute_flops=True, compute_vjp_flops=True)
    assert len(Counted.runs) == depth                    # linear in depth, not quadratic
    rows = [r for r in _rows(table) if r[1] == "Counted"]
    flops = [int(r[4]) for r in rows]
    assert len(rows) == depth and flops == sorted(flops, reverse=True)  # parents hold children
    assert all(int(r[5]) > int(r[4]) for r in rows)
    for a, b in zip(before, _snapshot(model)):
        np.testing.assert_array_equal(a, b)              # batch statistics did not move


def test_flops_with_a_structural_change_or_a_returned_module_still_work():
    class Sower(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 2, rngs=rngs)

        def layer(self):
            return self.linear

        def __call__(self, x):
            y = self.layer()(x)
            self.sow(nnx.Intermediate, "y", y)
            return y, "text", 3

    model = Sower(nnx.Rngs(0))
    table = nnx.tabulate(model, jnp.ones((1, 2)), compute_flops=True)
    rows = {r[0]: r for r in _rows(table) if r[1]}
    assert set(rows) == {"", "layer", "linear"}
    assert rows["linear"][4] == str(2 * 2 * 2 + 2)       # matmul + bias
    assert "- text" in table and not hasattr(model, "y")


def test_registered_pytree_outputs_show_their_fields():
    import dataclasses

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Out:
        logits: jax.Array
        aux: jax.Array

    class Model(nnx.Module):
        def __call__(self, x):
            return Out(x, x.sum())

    table = nnx.tabulate(Model(), jnp.ones((2, 3)))
    rows = [r for r in _rows(table) if r[1]]
    assert rows[0][3] == "logits: float32[2,3]"    # one field a line, in field order
    assert "aux: float32[]" in table
