"""Name -> factory registries with pattern-named families and close-match errors.

A registry maps names to factories. An entry is either an exact name (``"ToyGaussians"``) or a
*family template* such as ``"ffjord_l{layers:d}_h{hidden:d}_{activation}[_{suffix:*}]"``:

- ``{field}``     one lower-case word (letters and digits),
- ``{field:d}``   a non-negative integer (passed to the factory as ``int``),
- ``{field:*}``   anything non-empty (underscores included),
- ``[...]``       an optional part; an absent field is passed as ``None``.

Parsed fields are given to the factory as keyword arguments, followed by the caller's own.
"""
import difflib
import re


class UnknownNameError(KeyError):
    """A name that no registry entry resolves; the message lists close matches."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


PLURALS = {"network": "networks", "dataset": "datasets", "loss": "losses", "metric": "metrics"}
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


class Registry:
    """Entries of one kind (networks, datasets, losses, metrics)."""

    def __init__(self, kind):
        self.kind = kind
        self._exact = {}
        self._families = []  # (template, regex, int_fields, factory), in registration order
        self._members = {}  # family member name -> its bound factory (one object per name)
        self._listeners = []

    # -- registration ---------------------------------------------------------------
    def register(self, name, obj=None):
        """Register ``obj`` under ``name``; usable as ``@registry.register(name)``."""
        if obj is None:
            return lambda o: self.register(name, o)
        self._members.clear()
        if is_template(name):
            regex, ints = _template_to_regex(name)
            self._families = [f for f in self._families if f[0] != name]
            self._families.append((name, regex, ints, obj))
        else:
            self._exact[name] = obj
        for listener in self._listeners:
            listener(name, obj)
        return obj

    def add_listener(self, callback):
        """Call ``callback(name, obj)`` for every later registration (used by the bridge)."""
        self._listeners.append(callback)

    # -- lookup ---------------------------------------------------------------------
    def names(self):
        """Exact names and family templates, sorted."""
        return sorted(self._exact) + [f[0] for f in self._families]

    def __contains__(self, name):
        return self._match(name) is not None

    def parses(self, name):
        """Whether one of the family templates (not an exact name) matches ``name``."""
        return any(regex.match(name) for _, regex, _, _ in self._families)

    def _match(self, name):
        if name in self._exact:
            return self._exact[name], {}
        for _, regex, ints, factory in reversed(self._families):
            match = regex.match(name)
            if match:
                fields = {
                    k: (int(v) if k in ints and v is not None else v)
                    for k, v in match.groupdict().items()
                }
                return factory, fields
        return None

    def get(self, name):
        """The registered object for an exact name (a class or factory)."""
        found = self._match(name)
        if found is None:
            from .plugins import load_entry_point_plugins

            if load_entry_point_plugins():
                found = self._match(name)
        if found is None:
            raise UnknownNameError(self.unknown_message(name))
        obj, fields = found
        if fields:
            if name not in self._members:
                self._members[name] = _bind_fields(obj, name, fields)
            return self._members[name]
        return obj

    def build(self, name, **kwargs):
        return self.get(name)(**kwargs)

    def unknown_message(self, name):
        candidates = list(self._exact)
        for template, _, _, _ in self._families:
            candidates.append(template)
            candidates.append(_FIELD.sub("", template.replace("[", "").replace("]", "")))
        close = difflib.get_close_matches(name, candidates, n=4, cutoff=0.5)
        shown = []
        for c in close:  # show templates, not their stripped forms
            for template, _, _, _ in self._families:
                if c == _FIELD.sub("", template.replace("[", "").replace("]", "")):
                    c = template
            if c not in shown:
                shown.append(c)
        hint = f"; did you mean {', '.join(shown)}?" if shown else ""
        return (
            f"unknown {self.kind} '{name}'{hint} "
            f"(list all with: python -m torchprune_flows.registry {PLURALS.get(self.kind, self.kind)})"
        )


def _bind_fields(factory, name, fields):
    """A factory for one concrete family member: parsed fields + caller kwargs."""

    def member(**kwargs):
        return factory(**fields, **kwargs)

    member.__name__ = name
    member.__qualname__ = name
    member.__doc__ = factory.__doc__
    member.family_fields = dict(fields)
    return member
