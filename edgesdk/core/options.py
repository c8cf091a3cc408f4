"""Declared options: each converter (and each backend, for what it opens) says which options it reads, of
what type, with what default and help. The CLI's flags come from these declarations; validate() refuses an
option nobody declared (a misspelling used to be ignored without a word) and fills in the defaults, so the
default of an option is written once, in its declaration."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConversionError, UsageError


@dataclass(frozen=True)
class Option:
    """One conversion option. kind is "int", "float", "str", "bool" or "list" (of strings; on the CLI a
    comma-separated value, where 'none' is the empty list). choices limits a "str"."""

    name: str
    kind: str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    cli: bool = True  # offered as --NAME on `edgesdk convert`
    renamed_from: tuple[str, ...] = ()  # older names, still accepted with a DeprecationWarning

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse_cli(self, text: Any) -> Any:
        """The CLI's text as this option's value (click has already typed int/float/choices)."""
        if self.kind == "list" and isinstance(text, str):
            items = [v.strip() for v in text.split(",") if v.strip()]
            return [] if items == ["none"] else items
        return text

    def check(self, value: Any, error: type[Exception] = ConversionError) -> Any:
        """value, if it is of this option's kind (None means: the default), else `error`."""
        if value is None:
            return None
        kinds = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": (list, tuple)}
        ok = isinstance(value, kinds[self.kind]) and not (self.kind in ("int", "float") and isinstance(value, bool))
        if ok and self.kind == "list":
            ok = all(isinstance(v, str) for v in value)
        if ok and self.choices and value not in self.choices:
            ok = False
        if not ok:
            want = f"one of {', '.join(map(str, self.choices))}" if self.choices else f"a {self.kind}"
            raise error(f"Option '{self.name}' must be {want}; got {value!r}.")
        return list(value) if self.kind == "list" else value


def validate(given: dict[str, Any], declared: Iterable[Option], error: type[Exception] = ConversionError,
             what: str = "conversion option") -> dict[str, Any]:
    """Every declared option: the given value, checked against its kind, or the declared default. An
    unknown name raises `error`, listing the valid names (and the closest one); an older name of an option
    is accepted with a DeprecationWarning."""
    import difflib

    declared = list(declared)
    by_name = {o.name: o for o in declared}
    given = _renamed(given, declared)
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        hints = [f"'{u}' (did you mean '{m[0]}'?)" if (m := difflib.get_close_matches(u, by_name, 1)) else f"'{u}'"
                 for u in unknown]
        raise error(f"Unknown {what} {', '.join(hints)}. Valid options: {', '.join(sorted(by_name)) or 'none'}.")
    checked = {name: by_name[name].check(value, error) for name, value in given.items()}
    return {o.name: o.default if checked.get(o.name) is None else checked[o.name] for o in declared}


def _renamed(given: dict[str, Any], declared: list[Option]) -> dict[str, Any]:
    """given with older option names replaced by the current ones (warned); both at once is a UsageError."""
    current = {old: o.name for o in declared for old in o.renamed_from}
    out = dict(given)
    for old in [k for k in given if k in current]:
        new = current[old]
        if new in given:
            raise UsageError(f"Options '{old}' and '{new}' are the same option ('{old}' is its old name); give '{new}'.")
        warnings.warn(f"Option '{old}' is now '{new}'; the old name goes in the next release.", DeprecationWarning,
                      stacklevel=3)
        out[new] = out.pop(old)
    return out
