"""MkDocs hook and griffe extension: show doctest examples as code blocks.

nnxlib's docstrings and docs pages carry ``>>>`` examples (run by pytest). Rendered as
Markdown they would be prose (``[a]`` followed by ``[b]`` even reads as a link), so each
run of ``>>>``/``...`` lines and their output, outside an existing fence, is wrapped in
a fenced ``pycon`` block at the run's indentation: in docstrings before griffe parses
them (``DoctestBlocks``), in pages before MkDocs renders them (``on_page_markdown``).
The files themselves are unchanged, so pytest still runs the examples.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """Wrap every doctest run of ``text`` in a fenced code block.

    Example:
        >>> print(fence_doctests("Intro.\\n\\n    >>> 1 + 1\\n    2\\n\\nEnd."))
        Intro.
        <BLANKLINE>
            ```pycon
            >>> 1 + 1
            2
            ```
        <BLANKLINE>
        End.
    """
    lines = text.splitlines()
    out: list[str] = []
    in_fence = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if in_fence or not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    """Fence the doctests of every documented object."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs hook: fence the doctests of a docs page."""
    return fence_doctests(markdown)
