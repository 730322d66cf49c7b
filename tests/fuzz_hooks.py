"""Schemathesis hooks of tests/test_fuzz.py, loaded by the ``st`` process it starts.

- The run's own credential is never revoked: an admin may revoke the key it calls with,
  which would leave the rest of the run with nothing but 401s. A case that would do so
  is sent to an id that names no key instead.
- An ``Idempotency-Key`` header, where an operation documents one, is made unique per
  request: a generated value repeats across cases, and a key sent again with another
  body is refused by design.
"""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

import schemathesis

KEPT_KEY_ID = os.environ["FUZZ_KEY_ID"]
NO_SUCH_KEY = str(uuid.UUID(int=1))
IDEMPOTENCY_KEY = "idempotency-key"
IDEMPOTENCY_KEY_MAX_CHARS = 255
_requests = itertools.count(1)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    path = case.path_parameters or {}
    if case.method.upper() == "DELETE" and str(path.get("key_id")) == KEPT_KEY_ID:
        path["key_id"] = NO_SUCH_KEY
    number = next(_requests)
    for name, value in (case.headers or {}).items():
        # Only a valid key is replaced: an invalid one stays invalid.
        valid = isinstance(value, str) and 0 < len(value) <= IDEMPOTENCY_KEY_MAX_CHARS
        if name.lower() == IDEMPOTENCY_KEY and valid:
            case.headers[name] = f"fuzz-{number}"
