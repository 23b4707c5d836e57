"""Name -> factory registries with pattern-named families, examples and close-match errors.

A registry maps names to factories. An entry is either an exact name (``"ToyGaussians"``) or a
*family template* such as ``"ffjord_l{layers:d}_h{hidden:d}_{activation}[_{suffix:*}]"``:

- ``{field}``     one lower-case word (letters and digits),
- ``{field:d}``   a non-negative integer (passed to the factory as ``int``),
- ``{field:*}``   anything non-empty (underscores included),
- ``[...]``       an optional part; an absent field is passed as ``None``.

Parsed fields are given to the factory as keyword arguments, followed by the caller's own; a
caller's keyword that names a field is a :class:`TypeError` (the name already sets it).

A registration may carry

- ``examples``: small members that build fast (names, or ``(name, kwargs)`` pairs for the
  keyword arguments a quick build needs). :meth:`Registry.families` lists them, so tests can
  run over every family; each example must be a valid member of its entry.
- ``choices``: ``{field: Choices(...)}``, the values a field accepts. A name whose field is not
  among them does not resolve (:class:`InvalidFieldError`), and the error suggests full valid
  names close to the one given.

Registering a name or template again with a different object replaces the old entry with a
:class:`UserWarning`; registering the same object again is silent.
"""
import fnmatch
import re
import warnings

from ..errors import UserError
from .members import Choices, Example  # noqa: F401  (part of this module's interface)
from .suggest import close_matches, close_names, suggestion


class UnknownNameError(UserError, KeyError):
    """A name that no registry entry resolves; the message lists close matches."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


class InvalidFieldError(UnknownNameError, ValueError):
    """A name matches a family template, but a field's value is not one the family accepts."""


PLURALS = {"network": "networks", "dataset": "datasets", "loss": "losses", "metric": "metrics", "method": "methods"}
_FIELD = re.compile(r"\{(\w+)(?::([d*]))?\}")
_FIELD_PATTERNS = {None: r"[a-z0-9]+", "d": r"\d+", "*": r".+"}


def _template_to_regex(template):
    """Translate a family template into an anchored regular expression and its int fields."""
    out, ints, pos = [], set(), 0
    for match in re.finditer(r"\{\w+(?::[d*])?\}|\[|\]", template):
        out.append(re.escape(template[pos:match.start()]))
        token = match.group(0)
        if token == "[":
            out.append("(?:")
        elif token == "]":
            out.append(")?")
        else:
            name, kind = _FIELD.fullmatch(token).groups()
            if kind == "d":
                ints.add(name)
            out.append(f"(?P<{name}>{_FIELD_PATTERNS[kind]})")
        pos = match.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out) + r"\Z"), ints


def is_template(name):
    return bool(_FIELD.search(name))


def _template_fields(template):
    return [m.group(1) for m in _FIELD.finditer(template)]


def stripped_template(template):
    """A template without its fields and brackets (close-match candidate for literal typos)."""
    return _FIELD.sub("", template.replace("[", "").replace("]", ""))


def _patterns(pattern):
    return [pattern] if isinstance(pattern, str) else list(pattern)


class Registry:
    """Entries of one kind (networks, datasets, losses, metrics, pruning methods)."""

    def __init__(self, kind):
        self.kind = kind
        self._exact = {}
        self._families = []  # (template, regex, int_fields, factory), in registration order
        self._members = {}  # family member name -> its bound factory (one object per name)
        self._listeners = []
        self._examples = {}  # entry -> tuple of Example
        self._choices = {}  # template -> {field: Choices}

    # -- registration ---------------------------------------------------------------
    def register(self, name, obj=None, *, examples=None, choices=None):
        """Register ``obj`` under ``name``; usable as ``@registry.register(name)``.

        ``examples`` and ``choices``: see the module docstring. Re-registering ``name`` with a
        different object warns and replaces the entry (and its examples and choices).
        """
        if obj is None:
            def decorate(o):
                return self._add(name, o, examples, choices)

            return decorate
        return self._add(name, obj, examples, choices)

    def _add(self, name, obj, examples, choices):
        self._members.clear()
        choices = self._check_choices(name, choices)
        previous = self._entry(name)
        if choices or previous is not obj:
            kept_choices = choices
        else:  # the same object again without choices keeps its choices
            kept_choices = self._choices.get(name, {})
        if examples is not None:
            examples = self._check_examples(name, examples, kept_choices)
        if previous is not None and previous is not obj:
            what = f"{self.kind} family '{name}'" if is_template(name) else f"{self.kind} '{name}'"
            warnings.warn(f"{what} is registered again with a different object ({obj!r}, was {previous!r}); "
                          "the new registration replaces the old one", UserWarning, stacklevel=3)
        if is_template(name):
            regex, ints = _template_to_regex(name)
            self._families = [f for f in self._families if f[0] != name]
            self._families.append((name, regex, ints, obj))
            self._choices[name] = kept_choices
        else:
            self._exact[name] = obj
        if examples is not None:
            self._examples[name] = examples
        elif previous is not obj:
            self._examples.pop(name, None)
        for listener in self._listeners:
            listener(name, obj)
        return obj

    def _entry(self, name):
        if is_template(name):
            return next((f[3] for f in self._families if f[0] == name), None)
        return self._exact.get(name)

    def _check_choices(self, name, choices):
        choices = dict(choices or {})
        unknown = sorted(set(choices) - set(_template_fields(name)))
        if unknown:
            raise ValueError(f"choices for {unknown} given, but '{name}' has no such field")
        for field, domain in choices.items():
            if not isinstance(domain, Choices):
                raise TypeError(f"choices['{field}'] must be a Choices object, got {type(domain).__name__}")
        return choices

    def _check_examples(self, name, examples, choices):
        examples = tuple(Example.of(e) for e in examples)
        for example in examples:
            if is_template(name):
                regex, ints = _template_to_regex(name)
                match = regex.match(example.name)
                fields = _fields_of(match, ints) if match else None
                problem = None if fields is None else _problem(choices, fields)
                if fields is None or problem:
                    raise ValueError(f"example '{example.name}' is not a member of the {self.kind} family "
                                     f"'{name}'{': ' + problem if problem else ''}")
            elif example.name != name:
                raise ValueError(f"example '{example.name}' of the {self.kind} '{name}' must be that name")
        return examples

    def add_listener(self, callback):
        """Call ``callback(name, obj)`` for every later registration (used by the bridge)."""
        self._listeners.append(callback)

    # -- listing --------------------------------------------------------------------
    def names(self, pattern=None):
        """Exact names (sorted), then family templates (in registration order).

        ``pattern``: keep only entries matching a shell wildcard (:func:`fnmatch.fnmatchcase`,
        ``*``, ``?``, ``[seq]``), or any of a list of them; templates are matched as written.
        """
        listed = sorted(self._exact) + [f[0] for f in self._families]
        if pattern is None:
            return listed
        return [name for name in listed if any(fnmatch.fnmatchcase(name, p) for p in _patterns(pattern))]

    def examples(self, name):
        """The examples registered with the entry ``name`` (an exact name or a template)."""
        return self._examples.get(name, ())

    def families(self, pattern=None):
        """``{entry: (Example, ...)}`` for every family template and every exact name registered
        with examples (a family of one, sized by keyword arguments), in :meth:`names` order.

        ``pattern`` (wildcards, as for :meth:`names`) keeps entries whose name or one of whose
        examples' names matches.
        """
        out = {}
        for name in self.names():
            if not (is_template(name) or name in self._examples):
                continue
            examples = self.examples(name)
            if pattern is None or any(fnmatch.fnmatchcase(candidate, p) for p in _patterns(pattern)
                                      for candidate in [name] + [e.name for e in examples]):
                out[name] = examples
        return out

    # -- lookup ---------------------------------------------------------------------
    def __contains__(self, name):
        return self._valid(name)

    def parses(self, name):
        """Whether a family template (not an exact name) resolves ``name`` with valid fields."""
        if name in self._exact:
            return False
        try:
            return self._resolve(name) is not None
        except InvalidFieldError:
            return False

    def _lookup(self, name):
        """``((obj, fields, template), None)`` for a valid member; ``(None, (template, problem))``
        when templates match but none accepts the fields; ``(None, None)`` when nothing matches."""
        if name in self._exact:
            return (self._exact[name], {}, None), None
        rejected = None
        for template, regex, ints, factory in reversed(self._families):
            match = regex.match(name)
            if not match:
                continue
            fields = _fields_of(match, ints)
            problem = _problem(self._choices.get(template, {}), fields)
            if problem is None:
                return (factory, fields, template), None
            rejected = rejected or (template, problem)
        return None, rejected

    def _resolve(self, name):
        """``(obj, fields, template)`` of a valid member, ``None`` when no template matches; raises
        :class:`InvalidFieldError` when templates match but none accepts the fields."""
        found, rejected = self._lookup(name)
        if rejected is not None:
            template, problem = rejected
            raise InvalidFieldError(self._message(name, f"not a member of the family '{template}': {problem}"))
        return found

    def get(self, name):
        """The registered object for an exact name (a class or factory)."""
        try:
            found = self._resolve(name)
        except InvalidFieldError:
            if not self._load_plugins():
                raise
            found = self._resolve(name)
        else:
            if found is None and self._load_plugins():
                found = self._resolve(name)
        if found is None:
            raise UnknownNameError(self.unknown_message(name))
        obj, fields, template = found
        if fields:
            if name not in self._members:
                self._members[name] = _bind_fields(obj, name, fields, self.kind, template)
            return self._members[name]
        return obj

    @staticmethod
    def _load_plugins():
        from .plugins import load_entry_point_plugins

        return load_entry_point_plugins()

    def build(self, name, **kwargs):
        return self.get(name)(**kwargs)

    # -- errors ---------------------------------------------------------------------
    def _valid(self, name):
        return self._lookup(name)[0] is not None

    def close_names(self, name, n=3):
        """Up to ``n`` full valid names close to ``name``, closest first (see :mod:`.suggest`)."""
        return close_names(self, name, n)

    def _message(self, name, reason):
        close = self.close_names(name)
        hint = f"; valid names close to it: {', '.join(close)}" if close else ""
        return (f"{self.kind} '{name}' is {reason}{hint} "
                f"(list all with: python -m torchprune_flows.registry {PLURALS.get(self.kind, self.kind)})")

    def unknown_message(self, name):
        shown = self.close_names(name)
        candidates = list(self._exact)
        for template, _, _, _ in self._families:
            candidates.append(template)
            candidates.append(stripped_template(template))
        for c in close_matches(name, candidates, n=4, cutoff=0.5):
            for template, _, _, _ in self._families:  # show templates, not their stripped forms
                if c == stripped_template(template):
                    c = template
            if c not in shown:
                shown.append(c)
        hint = f"; {suggestion(shown[:5])}" if shown else ""
        return (
            f"unknown {self.kind} '{name}'{hint} "
            f"(list all with: python -m torchprune_flows.registry {PLURALS.get(self.kind, self.kind)})"
        )


def _fields_of(match, ints):
    return {k: (int(v) if k in ints and v is not None else v) for k, v in match.groupdict().items()}


def _problem(choices, fields):
    """The first field value outside its choices, explained; ``None`` when all are accepted."""
    for field, domain in choices.items():
        value = fields.get(field)
        if value is not None:
            problem = domain.problem(field, value)
            if problem is not None:
                return problem
    return None


def _bind_fields(factory, name, fields, kind="network", template=None):
    """A factory for one concrete family member: parsed fields + caller kwargs."""

    def member(**kwargs):
        clash = [k for k in kwargs if k in fields]
        if clash:
            given = ", ".join(f"{k}={fields[k]!r}" if fields[k] is not None else f"{k} (left out of the name)"
                              for k in clash)
            raise TypeError(
                f"{kind} '{name}': keyword argument{'s' if len(clash) > 1 else ''} {', '.join(clash)} "
                f"collide{'' if len(clash) > 1 else 's'} with the name's field{'s' if len(clash) > 1 else ''} "
                f"{given} of the family '{template}'; set {'them' if len(clash) > 1 else 'it'} in the name")
        return factory(**fields, **kwargs)

    member.__name__ = name
    member.__qualname__ = name
    member.__doc__ = factory.__doc__
    member.family_fields = dict(fields)
    member.family_template = template
    member.factory = factory
    return member
