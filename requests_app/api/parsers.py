"""The public API reads JSON only, and refuses what the database would choke on later."""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

#: Deeper than any real request; Python's parser would otherwise recurse until it fails.
MAX_DEPTH = 32


class StrictJSONParser(JSONParser):
    """JSON without NUL characters (PostgreSQL text and jsonb refuse them) and not absurdly nested."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        _check(data)
        return data


def _check(data: object) -> None:
    # Iterative, so a deep document cannot exhaust the stack here either.
    pending = [(data, 0)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.")
        if isinstance(value, str):
            if "\x00" in value:
                raise ParseError("JSON parse error - text must not contain NUL (\\u0000) characters.")
        elif isinstance(value, dict):
            pending.extend((key, depth + 1) for key in value)
            pending.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
