"""Close matches for error messages: :func:`close_matches` and :func:`did_you_mean`, which every
"did you mean" of the package uses, and the full valid names close to a name a registry does not
resolve (:func:`close_names`).

For a registry, two sources: a field whose value the family's :class:`~.members.Choices` reject is replaced by
close accepted values (``..._high_tox`` -> ``..._high_tol``), and every name one deletion,
transposition, substitution or insertion away is tried (``fjord_...`` -> ``ffjord_...``).
Only names the registry resolves are suggested.
"""
import difflib
import itertools
import string

#: names longer than this get no single-edit repair suggestions (the search grows with length)
MAX_REPAIR_LENGTH = 80


def close_matches(word, candidates, n=3, cutoff=0.6, ignore_case=False):
    """Up to ``n`` of ``candidates`` that look like ``word`` (similarity at least ``cutoff``,
    :func:`difflib.get_close_matches`), closest first; ``ignore_case`` compares lowercased."""
    candidates = [str(c) for c in candidates]
    if not ignore_case:
        return difflib.get_close_matches(str(word), candidates, n=n, cutoff=cutoff)
    by_lower = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    return [by_lower[hit] for hit in difflib.get_close_matches(str(word).lower(), list(by_lower), n=n, cutoff=cutoff)]


def did_you_mean(word, candidates, n=3, cutoff=0.6, ignore_case=False, quote=False):
    """``did you mean a, b or c?`` for the close matches of ``word`` (``quote``: ``'a'``), or ``""``
    when there is none; see :func:`close_matches`."""
    return suggestion(close_matches(word, candidates, n, cutoff, ignore_case), quote)


def suggestion(names, quote=False):
    """``did you mean a, b or c?`` for ``names`` (already chosen), or ``""`` when there is none."""
    shown = [f"'{name}'" if quote else str(name) for name in names]
    if not shown:
        return ""
    listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
    return f"did you mean {listed}?"


def field_repairs(registry, name):
    """Valid names made by replacing an unaccepted field value with close accepted ones."""
    repaired = []
    for template, regex, _, _ in reversed(registry._families):
        match = regex.match(name)
        choices = registry._choices.get(template, {})
        if not match or not choices:
            continue
        options = []
        for field, value in match.groupdict().items():
            if value is None or field not in choices or choices[field].problem(field, value) is None:
                continue
            close = close_matches(value, choices[field].candidates(), n=3, cutoff=0.5)
            options.append([(match.span(field), v) for v in close])
        for combination in itertools.product(*options) if options else ():
            candidate = name
            for (start, end), value in sorted(combination, reverse=True):
                candidate = candidate[:start] + value + candidate[end:]
            if registry._valid(candidate) and candidate not in repaired:
                repaired.append(candidate)
    return repaired


def single_edits(registry, name):
    """Valid names one deletion, transposition, substitution or insertion away from ``name``."""
    if len(name) > MAX_REPAIR_LENGTH:
        return []
    alphabet = set(string.ascii_lowercase + string.digits + "_")
    alphabet.update(c for entry in registry._exact for c in entry)
    alphabet.update(c for f in registry._families for c in f[0] if c not in "{}[]:*")
    splits = [(name[:i], name[i:]) for i in range(len(name) + 1)]
    edits = {a + b[1:] for a, b in splits if b}
    edits |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    edits |= {a + c + b[1:] for a, b in splits if b for c in alphabet}
    edits |= {a + c + b for a, b in splits for c in alphabet}
    edits.discard(name)
    return [candidate for candidate in edits if registry._valid(candidate)]


def close_names(registry, name, n=3):
    """Up to ``n`` full valid names close to ``name``, closest first."""
    found = field_repairs(registry, name)
    ratio = {c: difflib.SequenceMatcher(None, name, c).ratio() for c in single_edits(registry, name)}
    found += [c for c in sorted(ratio, key=lambda c: (-ratio[c], c)) if c not in found]
    return found[:n]
