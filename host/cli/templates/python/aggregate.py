"""The `{{NAME}}` aggregate's state and rules (see app.py)."""

import json

from componentize_py_types import Err
from wit_world.exports.aggregate import Instance as InstanceResource
from wit_world.imports.types import (
    CommandError_Invalid,
    CommandError_Rejected,
    EventError,
    NewEvent,
)


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


class Instance(InstanceResource):
    def __init__(self, id: str) -> None:
        self.count = 0

    @classmethod
    def restore(cls, id: str, snapshot: bytes) -> "Instance":
        instance = cls(id)
        try:
            instance.count = int(json.loads(snapshot)["count"])
        except (ValueError, KeyError, TypeError) as e:
            raise Err(f"not a {id} snapshot: {e}") from None
        return instance

    def apply(self, events) -> None:
        for event in events:
            if event.event_type == "Added":
                by = json.loads(event.data).get("by")
                if not isinstance(by, int) or isinstance(by, bool):
                    raise Err(EventError(position=event.position, message="an Added without by"))
                self.count += by
            elif event.event_type == "Reset":
                self.count = 0

    def handle(self, command) -> list:
        # Decode the whole command before any rule: a malformed one is invalid, not rejected.
        try:
            payload = json.loads(command.payload)
        except ValueError as e:
            raise Err(CommandError_Invalid(f"the command is not JSON: {e}")) from None
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "Add":
            by = payload.get("by")
            if not isinstance(by, int) or isinstance(by, bool):
                raise Err(CommandError_Invalid('expected {"type":"Add","by":N}'))
            if by <= 0:
                raise Err(CommandError_Rejected(f"by must be positive, got {by}"))
            return [NewEvent(event_type="Added", schema_version=2, data=dumps({"by": by}),
                             subject_id=None, personal_data=None)]
        if kind == "Reset":
            if self.count == 0:
                raise Err(CommandError_Rejected("nothing to reset"))
            return [NewEvent(event_type="Reset", schema_version=1, data="{}",
                             subject_id=None, personal_data=None)]
        raise Err(CommandError_Invalid(f"unknown command {json.dumps(kind)}"))

    def snapshot(self) -> bytes:
        return dumps({"count": self.count}).encode()

    def state(self) -> str:
        return dumps({"count": self.count})
