"""Request checks every servicer shares: unknown fields and required fields."""

from __future__ import annotations

from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from services.common.errors import FieldViolation, InvalidRequest


def unknown_field_paths(message: Message, prefix: str = "") -> list[str]:
    """Paths of the unknown fields in `message` and its set sub-messages (e.g. 'start.#17')."""
    unknown = UnknownFieldSet(message)
    paths = [f"{prefix}#{unknown[i].field_number}" for i in range(len(unknown))]
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        name = f"{prefix}{descriptor.name}"
        if descriptor.is_repeated:
            if descriptor.message_type.GetOptions().map_entry:
                continue
            for i, item in enumerate(value):
                paths.extend(unknown_field_paths(item, f"{name}[{i}]."))
        else:
            paths.extend(unknown_field_paths(value, f"{name}."))
    return paths


def reject_unknown_fields(message: Message) -> None:
    """Raise InvalidRequest when the client sent fields this server's contract does not know.

    Protobuf silently keeps unknown fields; a client built against a newer or wrong .proto
    would otherwise have part of its request ignored without knowing.
    """
    paths = unknown_field_paths(message)
    if paths:
        name = message.DESCRIPTOR.full_name
        raise InvalidRequest(
            f"{name} has fields this server does not know (field numbers: {', '.join(paths)}); "
            "regenerate your client from the server's llamagate.v1 .proto files",
            [FieldViolation(p, "unknown field") for p in paths],
        )
