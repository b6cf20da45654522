"""What the API takes as a body and as paging parameters: refused with a 400 and its reason, never a 500; and
what OPTIONS says of a route.

A JSON body must be one object, nested at most MAX_DEPTH levels, its every key and string
valid Unicode (no lone surrogates) without NUL or other control characters (tab and line
breaks aside: cloud-init user data has them). Its size is capped before it is read
(cloudpanel/bodylimit.py). Pages of a list hold at most MAX_LIMIT rows.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.metadata import SimpleMetadata
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser

MAX_DEPTH = 32
MAX_LIMIT = 500
MAX_OFFSET = 10**9
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _check_text(text: str, where: str) -> None:
    """Refused as the field's error (the body's own, for a key), as serializers answer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError({where or "body": ["not valid Unicode (a lone surrogate)"]}) from None
    if _CONTROL.search(text):
        raise ValidationError({where or "body": ["NUL and control characters are not allowed (tab and line breaks "
                                                 "are)"]})


def _check(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ParseError(f"the body is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where)
            _check(item, f"{where}.{key[:50]}" if where else key[:50], depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]", depth + 1)


class StrictJSONParser(JSONParser):
    """DRF's JSON parser under the rules above."""

    def parse(self, stream, media_type=None, parser_context=None) -> dict:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"the body is nested deeper than {MAX_DEPTH} levels") from None
        if not isinstance(data, dict):
            kind = "null" if data is None else type(data).__name__
            raise ParseError(f"the body must be a JSON object, not {kind}")
        _check(data, "", 1)
        return data


def _bounded(value: str | None, name: str, maximum: int, what: str) -> None:
    if value is not None and (not (value.isascii() and value.isdigit()) or len(value) > 12 or int(value) > maximum):
        raise ValidationError({name: [f"a whole number from 0 to {maximum}{what}"]})


class BoundedPagination(LimitOffsetPagination):
    """limit (50 when not given; more than MAX_LIMIT rows are never sent) and offset (at most MAX_OFFSET)."""

    max_limit = MAX_LIMIT

    def paginate_queryset(self, queryset, request, view=None):
        _bounded(request.query_params.get(self.limit_query_param), self.limit_query_param, 10**12 - 1,
                 f" (pages hold at most {MAX_LIMIT} rows)")
        _bounded(request.query_params.get(self.offset_query_param), self.offset_query_param, MAX_OFFSET, "")
        return super().paginate_queryset(queryset, request, view)


class Metadata(SimpleMetadata):
    """OPTIONS on every route: the fields of what it takes, where its serializer has fields (an answer-only one,
    such as an invoice's, has none to describe)."""

    def get_serializer_info(self, serializer) -> dict:
        return super().get_serializer_info(serializer) if hasattr(serializer, "fields") else {}
