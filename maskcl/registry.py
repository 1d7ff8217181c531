"""One registry class for every kind of plug-in (methods, task predictors, loggers): a name per class,
registered with a class decorator, looked up with a one-line error that lists the known names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from maskcl.errors import MaskclError

__all__ = ["Registry"]

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """The classes of one ``kind`` (e.g. ``"task predictor"``), each a subclass of ``base``.

    ``check``: called with each class being registered, raises a one-line error for one that cannot work.
    ``discover``: called before the names are listed or a name is missing (e.g. to load entry points).
    """

    def __init__(
        self,
        kind: str,
        base: type,
        check: Callable[[str, type], None] | None = None,
        discover: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self.base = base
        self._check = check
        self._discover = discover
        self._classes: dict[str, T] = {}

    def register(self, name: str, decorator: str) -> Callable[[T], T]:
        """A class decorator registering its class as ``name`` and setting its ``name`` attribute;
        ``decorator``: the public decorator's name, for its errors."""

        def add(cls: T) -> T:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise MaskclError(
                    f"{decorator}({name!r}) decorates a {self.base.__name__} subclass, not {cls!r}"
                )
            if self._check is not None:
                self._check(name, cls)
            known = self._classes.get(name)
            if known is not None and known is not cls:
                raise MaskclError(f"a {self.kind} called {name!r} is registered already ({known.__module__})")
            cls.name = name
            self._classes[name] = cls
            return cls

        return add

    def names(self) -> list[str]:
        """The registered names, sorted."""
        if self._discover is not None:
            self._discover()
        return sorted(self._classes)

    def get(self, name: str) -> T:
        """The class registered as ``name``, or a one-line error listing the known names."""
        if name not in self._classes and self._discover is not None:
            self._discover()
        if name not in self._classes:
            raise MaskclError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._classes))}")
        return self._classes[name]
