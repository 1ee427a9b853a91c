"""The API reference (docs/api/*.md) covers every public name of nnxlib."""

import pathlib
import re
import types

import nnxlib

API = pathlib.Path(__file__).resolve().parent.parent / "docs" / "api"
# Names that are not nnxlib definitions: type variables and aliases.
NOT_DOCUMENTED_HERE = {"A", "M", "PureState", "Initializer", "PARTITION_NAME", "display"}


def documented_modules() -> set[str]:
    modules = set()
    for page in API.glob("*.md"):
        modules |= set(re.findall(r"^::: (\S+)", page.read_text(), re.M))
    return modules


def test_every_public_name_has_an_api_page():
    modules = documented_modules()
    missing = []
    for name in dir(nnxlib):
        value = getattr(nnxlib, name)
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        origin = getattr(value, "__module__", None) or ""
        if not origin.startswith("nnxlib") or name in NOT_DOCUMENTED_HERE:
            continue  # re-exported from jax (activations): documented by jax
        if origin not in modules:
            missing.append(f"{name} ({origin})")
    assert not missing, f"no docs/api page renders: {missing}"


def test_api_pages_are_in_the_site_navigation():
    nav = (API.parent.parent / "mkdocs.yml").read_text()
    for page in API.glob("*.md"):
        assert f"api/{page.name}" in nav, page.name
