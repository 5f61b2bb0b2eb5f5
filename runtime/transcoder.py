"""Event state to bytes and back with orjson, keeping Decimal, UUID and datetime exact."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Transcoder, Transcoding

_TYPE = "_type_"
_DATA = "_data_"


class UUIDAsHex(Transcoding):
    type = UUID
    name = "uuid_hex"

    def encode(self, obj: UUID) -> str:
        return obj.hex

    def decode(self, data: str) -> UUID:
        return UUID(data)


class DecimalAsStr(Transcoding):
    type = Decimal
    name = "decimal_str"

    def encode(self, obj: Decimal) -> str:
        return str(obj)

    def decode(self, data: str) -> Decimal:
        return Decimal(data)


class DatetimeAsISO(Transcoding):
    type = datetime
    name = "datetime_iso"

    def encode(self, obj: datetime) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> datetime:
        return datetime.fromisoformat(data)


class OrjsonTranscoder(Transcoder):
    """Tags registered types as `{"_type_", "_data_"}` (the library's JSON convention).

    orjson would write UUIDs and datetimes as bare strings, losing their type on the way
    back, so values are tagged in one pass before orjson writes the bytes.
    """

    def __init__(self) -> None:
        self.types: dict[type, Transcoding] = {}
        self.names: dict[str, Transcoding] = {}
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
            self.register(transcoding)

    def register(self, transcoding: Transcoding) -> None:
        self.types[transcoding.type] = transcoding
        self.names[transcoding.name] = transcoding

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(self._tag(obj))

    def decode(self, data: bytes) -> Any:
        return self._untag(orjson.loads(data))

    def _tag(self, obj: Any) -> Any:
        kind = type(obj)
        if kind in (str, int, bool) or obj is None:
            return obj
        if kind is float:
            raise TypeError("floats are not stored in events: use Decimal or integer minor units")
        if kind is dict:
            return {key: self._tag(value) for key, value in obj.items()}
        if kind in (list, tuple):
            return [self._tag(value) for value in obj]
        transcoding = self.types.get(kind)
        if transcoding is None:
            raise TypeError(f"no transcoding registered for {kind.__qualname__}")
        return {_TYPE: transcoding.name, _DATA: self._tag(transcoding.encode(obj))}

    def _untag(self, obj: Any) -> Any:
        if type(obj) is dict:
            if len(obj) == 2 and _TYPE in obj and _DATA in obj:
                return self.names[obj[_TYPE]].decode(self._untag(obj[_DATA]))
            return {key: self._untag(value) for key, value in obj.items()}
        if type(obj) is list:
            return [self._untag(value) for value in obj]
        return obj


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value
