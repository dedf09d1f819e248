"""URL state shared by the pages: query parsing and the part of a selection that links carry.

A page keeps its selection in the query string (``/neurons?pair=12&neuron=40``), so a view can be
bookmarked and a page can link to the same pair, neuron or class pair in another page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

from advlens.errors import AdvlensError

SHARED_KEYS = ("true", "adv", "pair", "neuron")
"""Query keys every page understands: a class pair (true → adversarial label), a pair, a neuron."""


def parse_query(search: str | None) -> dict[str, str]:
    """``?a=1&b=2`` → ``{"a": "1", "b": "2"}`` (the last value of a repeated key)."""
    parsed = parse_qs((search or "").lstrip("?"), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}


def make_query(params: dict[str, object]) -> str:
    """``{"a": 1}`` → ``"?a=1"``; ``""`` for no parameters."""
    return "?" + urlencode(params) if params else ""


def shared_query(search: str | None) -> str:
    """The part of a page's query other pages understand (class pair, pair, neuron), for links."""
    params = parse_query(search)
    return make_query({key: params[key] for key in SHARED_KEYS if key in params})


class QueryReader:
    """Reads a page's URL parameters one at a time: ``read(key, check, default)`` is ``check(value)``, or
    ``default`` when the key is absent or its check refuses the value (an :class:`AdvlensError`), which is then
    reported in ``problems`` for the page to show."""

    def __init__(self, params: dict[str, str], problems: list[str]) -> None:
        self.params = params
        self.problems = problems

    def __call__(self, key: str, check: Callable[[str], Any], default: Any) -> Any:
        if key not in self.params:
            return default
        try:
            return check(self.params[key])
        except AdvlensError as exc:
            self.problems.append(f"URL parameter {key}={self.params[key]!r}: {exc}")
            return default
