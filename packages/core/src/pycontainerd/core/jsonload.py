"""``load_json``: a JSON document that must be of one type, or a ``ValueError`` saying why.

Callers put what the document is in front of the reason (``archive entry
'index.json': not a JSON object``) and raise their own error kind.
"""

from __future__ import annotations

import json
from typing import Final, TypeVar

T = TypeVar("T")

_JSON_NAMES: Final[dict[type, str]] = {dict: "object", list: "array", str: "string"}


def load_json(data: bytes | str, kind: type[T]) -> T:
    """``data`` parsed as JSON; the result must be a ``kind`` (``dict`` for an object).

    Raises:
        ValueError: ``invalid JSON: <the parser's reason>``, or ``not a JSON object``
            (``array``, ...) when the document is of another type.
    """
    try:
        doc = json.loads(data)
    except ValueError as exc:
        msg = f"invalid JSON: {exc}"
        raise ValueError(msg) from None
    if not isinstance(doc, kind):
        msg = f"not a JSON {_JSON_NAMES.get(kind, kind.__name__)}"
        raise ValueError(msg)
    return doc
