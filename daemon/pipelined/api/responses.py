"""JSON in and out with orjson.

Litestar serialises with msgspec by default; every response of this API goes through
`OrjsonResponse` instead (set as the app's `response_class`, and built explicitly by handlers
and exception handlers). Two corners orjson does not cover are handled without losing data:
integers beyond 64 bits (orjson refuses to encode them and decodes them as floats) go through
msgspec, which keeps them exact — so arbitrary JSON items pass through without type coercion.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import orjson
from litestar import Response
from litestar.enums import MediaType

_LONG_INTEGER = re.compile(rb"\d{19,}")
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class JsonBodyError(ValueError):
    """The request body is not valid JSON; the message says where."""


def encode_json(content: Any) -> bytes:
    """orjson, falling back to msgspec for what orjson cannot encode (integers beyond 64 bits)."""
    try:
        return orjson.dumps(content, default=repr, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return msgspec.json.encode(content, enc_hook=repr)


def decode_json(body: bytes) -> Any:
    """Parse a request body; integers longer than 18 digits stay exact integers."""
    try:
        if _LONG_INTEGER.search(body):
            return msgspec.json.decode(body)
        return orjson.loads(body)
    except (orjson.JSONDecodeError, msgspec.DecodeError) as exc:
        raise JsonBodyError(f"request body is not valid JSON: {exc}") from None


class OrjsonResponse(Response[Any]):
    """A Litestar response whose JSON body is encoded with orjson."""

    def render(self, content: Any, media_type: str, enc_hook: Any = None) -> bytes:
        if isinstance(content, bytes):
            return content
        if "json" in media_type:
            return encode_json(content)
        if isinstance(content, str):
            return content.encode("utf-8")
        return super().render(content, media_type, enc_hook)


def json_response(content: Any, status_code: int = 200) -> OrjsonResponse:
    return OrjsonResponse(content=content, status_code=status_code, media_type=MediaType.JSON)


def text_response(text: str, media_type: str, status_code: int = 200) -> OrjsonResponse:
    return OrjsonResponse(content=text, status_code=status_code, media_type=media_type)
