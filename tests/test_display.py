"""Tests for nnxlib.display: nnx.display, treescope rendering and text reprs."""

import importlib
import sys
import types

import jax.numpy as jnp
import treescope

import nnxlib as nnx

# ``nnx.display`` is the callable; the module behind it is nnxlib.display.
display_module = importlib.import_module("nnxlib.display")


class Block(nnx.Module):
    def __init__(self):
        self.kernel = nnx.Param(jnp.ones((2, 2)), out_sharding=("embed", "mlp"))
        self.mean = nnx.BatchStat(jnp.zeros(2))
        self.features = 2


class Model(nnx.Module):
    def __init__(self):
        self.block = Block()
        self.layers = [Block()]
        self.tied = self.block


class TestDisplayFunction:
    def test_prints_repr_outside_notebooks(self, capsys):
        p = nnx.Param(1.0)
        nnx.display(p)
        assert capsys.readouterr().out == repr(p) + "\n"

    def test_several_values(self, capsys):
        nnx.display(nnx.Param(1.0), nnx.State({"a": 1}))
        out = capsys.readouterr().out
        assert out.startswith("Param(") and "State({" in out

    def test_module(self, capsys):
        nnx.display(Model())
        out = capsys.readouterr().out
        assert out.startswith("Model(") and "kernel=Param(" in out

    def test_uses_treescope_in_a_notebook(self, monkeypatch):
        shown = []
        monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
        monkeypatch.setattr(display_module, "_has_ipython_kernel", lambda: True)
        monkeypatch.setattr(treescope, "display", shown.append)
        m = Model()
        nnx.display(m)
        assert shown == [m]

    def test_no_kernel_without_ipython(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "IPython", None)  # makes the import fail
        assert display_module._has_ipython_kernel() is False


class TestTreescope:
    def test_module_text(self):
        text = treescope.render_to_text(Model())
        assert text.startswith("Model(")
        assert "block=Block(" in text and "features=2" in text
        assert "kernel=Param(" in text and "sharding=('embed', 'mlp')" in text

    def test_variable_text_shows_metadata(self):
        text = treescope.render_to_text(nnx.Param(jnp.ones(2), out_sharding=("embed",), note=1))
        assert text.startswith("Param(")
        assert "value=" in text and "sharding=('embed',)" in text and "note=1" in text

    def test_state_text(self):
        text = treescope.render_to_text(nnx.state(Block()))
        assert text.startswith("State({")
        assert "'kernel': Param(" in text and "'mean': BatchStat(" in text

    def test_html(self):
        for value in (Model(), nnx.state(Block()), nnx.Param(1.0), nnx.Rngs(0)):
            html = nnx.display.render_to_html(value)
            assert isinstance(html, str) and "treescope" in html

    def test_uncompressed_html_names_everything(self):
        html = treescope.render_to_html(Model(), compressed=False)
        for word in ("Model", "Block", "kernel", "Param", "BatchStat", "embed"):
            assert word in html

    def test_rngs(self):
        text = treescope.render_to_text(nnx.Rngs(0))
        assert "Rngs(" in text and "RngKey(" in text and "RngCount(" in text


class TestTextReprs:
    def test_module_repr_marks_shared(self):
        text = repr(Model())
        assert "tied=<shared Block, shown above>" in text
        assert "layers=List([\n    Block(  # Param: " in text

    def test_module_repr_counts_variables_once_by_kind(self):
        class Pair(nnx.Module):
            def __init__(self):
                self.a = nnx.Param(jnp.zeros((2, 3)))                 # 6 x 4 B
                self.b = self.a                                       # shared: once
                self.stat = nnx.BatchStat(jnp.zeros(2, jnp.int8))     # 2 x 1 B

        first_line = repr(Pair()).splitlines()[0]
        assert first_line == "Pair(  # Param: 6 (24 B), BatchStat: 2 (2 B), Total: 8 (26 B)"

    def test_state_repr(self):
        text = repr(nnx.state(Block()))
        assert text.startswith("State({\n  'kernel': Param(\n")
        assert "sharding=('embed', 'mlp')" in text

    def test_graphdef_repr(self):
        text = repr(nnx.graphdef(Model()))
        assert "Block(index=" in text and "'features': 2" in text
        assert "sharding=('embed', 'mlp')" in text
