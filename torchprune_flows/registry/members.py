"""What a registration may say about its members: examples that build fast, and field choices."""
import collections
import itertools


class Example(collections.namedtuple("Example", "name kwargs")):
    """A small member of a registry entry: ``registry.build(example.name, **example.kwargs)``."""

    __slots__ = ()

    def __str__(self):
        if not self.kwargs:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"

    @classmethod
    def of(cls, example):
        """An :class:`Example` from a name, a ``(name, kwargs)`` pair or an Example."""
        if isinstance(example, str):
            return cls(example, {})
        name, kwargs = example
        if not isinstance(name, str) or not isinstance(kwargs, dict):
            raise TypeError(f"an example is a name or a (name, kwargs dict) pair, got {example!r}")
        return cls(name, dict(kwargs))


class Choices:
    """The values a template field accepts, for validation and for suggestions.

    ``values``: the valid values. With ``joined`` (a separator) a valid value is one or more of
    them joined by it, e.g. solver suffixes ``da`` or ``da_high_tol`` with ``joined="_"``;
    suggestions then draw on joins of up to ``max_parts`` distinct values. ``check(value)``, if
    given, decides validity instead and explains an invalid value by raising ``ValueError``.
    """

    def __init__(self, values, joined=None, check=None, max_parts=2):
        self.values = tuple(values)
        self.joined = joined
        self.check = check
        self.max_parts = max_parts

    def _parses(self, value):
        rest, longest_first = value, sorted(self.values, key=len, reverse=True)
        while rest:
            for part in longest_first:
                if rest == part:
                    return True
                if rest.startswith(part + self.joined):
                    rest = rest[len(part) + len(self.joined):]
                    break
            else:
                return False
        return False  # a trailing separator

    def problem(self, field, value):
        """``None`` for a valid ``value``, else one line saying why it is not."""
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as err:
                return " ".join(str(err).split())
            return None
        if value in self.values or (self.joined is not None and self._parses(value)):
            return None
        how = f" joined by '{self.joined}'" if self.joined is not None else ""
        return f"{field} '{value}' is not valid; choose from {', '.join(self.values)}{how}"

    def __contains__(self, value):
        return self.problem("value", value) is None

    def candidates(self):
        """Valid values to draw suggestions from."""
        if self.joined is None:
            return list(self.values)
        return [self.joined.join(parts) for n in range(1, self.max_parts + 1)
                for parts in itertools.permutations(self.values, n)]
