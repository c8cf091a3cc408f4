"""Declared conversion options: each converter says which options it reads, of what type, with what
default and help. The CLI's flags come from these declarations, and convert() refuses an option nobody
declared (a misspelling used to be ignored without a word)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConversionError


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

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse_cli(self, text: Any) -> Any:
        """The CLI's text as this option's value (click has already typed int/float/choices)."""
        if self.kind == "list" and isinstance(text, str):
            items = [v.strip() for v in text.split(",") if v.strip()]
            return [] if items == ["none"] else items
        return text

    def check(self, value: Any) -> Any:
        """value, if it is of this option's kind (None means: the default), else ConversionError."""
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
            raise ConversionError(f"Option '{self.name}' must be {want}; got {value!r}.")
        return list(value) if self.kind == "list" else value


def validate(given: dict[str, Any], declared: Iterable[Option]) -> dict[str, Any]:
    """The given options checked against the declared ones: an unknown name is a ConversionError that
    lists the valid names (and the closest one); each value must fit its option's kind."""
    import difflib

    by_name = {o.name: o for o in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        hints = [f"'{u}' (did you mean '{m[0]}'?)" if (m := difflib.get_close_matches(u, by_name, 1)) else f"'{u}'"
                 for u in unknown]
        raise ConversionError(f"Unknown conversion option {', '.join(hints)}. Valid options: "
                              f"{', '.join(sorted(by_name))}.")
    return {name: by_name[name].check(value) for name, value in given.items()}

