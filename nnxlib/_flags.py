"""Boolean settings that a call sets, a ``with`` block scopes, and a decorator scopes.

flax.nnx's switches (``set_graph_mode``, ``set_graph_updates``, ``use_eager_sharding``)
all work three ways, and users rely on each::

    nnx.set_graph_mode(False)          # from here on, process-wide
    with nnx.set_graph_mode(False):    # inside the block only
        ...
    @nnx.set_graph_mode(False)         # while the function runs only
    def step(...): ...

:class:`BoolSetting` implements that once; a setting is a subclass with its own default
and stack. Scoped values live on a per-thread stack (one thread's ``with`` block does
not change another thread's mode); the process-wide default is shared.

Example:
    >>> class verbose(BoolSetting):
    ...     default = False
    >>> verbose.current()
    False
    >>> with verbose(True):
    ...     verbose.current()
    True
    >>> verbose.current()
    False
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["BoolSetting"]

_COUNT_LOCK = threading.Lock()


class BoolSetting:
    """Base of a boolean setting; subclasses set ``default`` (the process-wide value).

    Constructing one sets the process-wide value; entering it as a context manager, or
    decorating a function with it, undoes that and scopes the value instead.

    Example:
        >>> class fast(BoolSetting):
        ...     default = True
        >>> @fast(False)
        ... def slow_path():
        ...     return fast.current()
        >>> slow_path(), fast.current()
        (False, True)
        >>> fast(False)          # a bare call: process-wide
        fast(False)
        >>> fast.current()
        False
        >>> _ = fast(True)
    """

    default: bool = True
    _stacks: threading.local
    _scopes = 0  # scopes open in any thread: while 0, current() is one attribute read

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls._stacks = threading.local()
        cls._scopes = 0

    def __init__(self, value: bool, /):
        if not isinstance(value, bool):
            raise TypeError(f"{type(self).__name__} expects True or False, got {value!r}. "
                            f"Hint: {type(self).__name__}(False).")
        cls = type(self)
        self.value = value
        # A bare call changes the value in force: inside a scope (this thread's), the
        # scope's value; outside any, the process-wide one...
        stack = cls._stack() if cls._scopes else None
        if stack:
            self._previous: tuple = (stack, stack[-1])
            stack[-1] = value
        else:
            self._previous = (None, cls.default)
            cls.default = value

    @classmethod
    def _stack(cls) -> list:
        stack = getattr(cls._stacks, "values", None)
        if stack is None:
            stack = cls._stacks.values = []
        return stack

    @classmethod
    def current(cls) -> bool:
        """The value in force here: the innermost scope's, else the process-wide one."""
        if not cls._scopes:  # graph functions ask on every call: keep it cheap
            return cls.default
        stack = cls._stack()
        return stack[-1] if stack else cls.default

    @classmethod
    def current_value(cls) -> bool:
        """:meth:`current` under flax.nnx's name (``nnx.set_graph_mode.current_value()``).

        Example:
            >>> class loud(BoolSetting):
            ...     default = False
            >>> loud.current_value()
            False
        """
        return cls.current()

    @classmethod
    @contextlib.contextmanager
    def scope(cls, value: bool) -> Iterator[bool]:
        """A ``with`` block with ``value`` in force, leaving the process-wide value alone
        (for library code that sets a value on the caller's behalf).

        Example:
            >>> class quiet(BoolSetting):
            ...     default = False
            >>> with quiet.scope(True):
            ...     quiet.current()
            True
        """
        cls._push(value)
        try:
            yield value
        finally:
            cls._pop()

    @classmethod
    def _push(cls, value: bool) -> None:
        with _COUNT_LOCK:
            cls._scopes += 1
        cls._stack().append(value)

    @classmethod
    def _pop(cls) -> None:
        cls._stack().pop()
        with _COUNT_LOCK:
            cls._scopes -= 1

    def _unset_default(self) -> None:
        # ...but a scoped use (with, decorator) must leave it as it found it.
        stack, previous = self._previous
        if stack is not None:
            if stack:
                stack[-1] = previous
        elif type(self).default is self.value:
            type(self).default = previous

    def __enter__(self) -> bool:
        self._unset_default()
        type(self)._push(self.value)
        return self.value

    def __exit__(self, *exc: Any) -> None:
        type(self)._pop()

    def __call__(self, f: F) -> F:
        self._unset_default()
        value = self.value
        cls = type(self)

        @functools.wraps(f)
        def scoped(*args: Any, **kwargs: Any) -> Any:
            cls._push(value)
            try:
                return f(*args, **kwargs)
            finally:
                cls._pop()

        return scoped  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value})"
