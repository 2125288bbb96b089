"""Validate Mail Send payloads against SendGrid's published OpenAPI 3.1 spec.

Our payload builder is checked against the vendor's own schema, not against our reading of
their docs. The request body schema is located by following ``POST /v3/mail/send`` →
``requestBody`` in the spec (no hard-coded copy of the schema), and its ``$ref``s resolve
through a ``referencing.Registry`` rooted at the whole spec document. Formats are asserted, so
``"email": "not-an-address"`` fails as it would at SendGrid.

Known quirk of the spec: the *top-level* ``custom_args`` is typed as a string; nudge only uses
``personalizations[].custom_args`` (an object there), so this is left as published.

The spec lives in the shared folder beside the repository (``<repo>/../shared/specs/...``);
``NUDGE_SENDGRID_SPEC`` overrides the path. Where it is read from, and whether a missing spec
skips or fails the test (``NUDGE_REQUIRE_SPECS``), is decided in ``tests/spec_schemas.py``.

Usage from another test::

    from tests.support.sendgrid_schema import validate_sendgrid_payload
    validate_sendgrid_payload(recorded_request.body)  # raises jsonschema.ValidationError
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.support import spec_schemas

SPEC_ENV = spec_schemas.SENDGRID_SPEC_ENV
SPEC_URI = "urn:nudge:sendgrid:tsg_mail_v3.json"
MAIL_SEND_PATH = "/v3/mail/send"


def spec_path() -> Path:
    """Where the SendGrid Mail Send OpenAPI document is read from (it may not exist)."""
    return spec_schemas.spec_path("sendgrid")


def _escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@functools.cache
def mail_send_validator() -> Draft202012Validator:
    """A Draft 2020-12 validator for the JSON body of ``POST /v3/mail/send``.

    Skips the calling test without the spec (fails it when ``NUDGE_REQUIRE_SPECS`` is set).
    """
    path = spec_schemas.require_spec("sendgrid")
    spec = json.loads(path.read_text(encoding="utf-8"))
    request_body = spec["paths"][MAIL_SEND_PATH]["post"]["requestBody"]
    if "$ref" in request_body:
        body_pointer = request_body["$ref"].removeprefix("#")
    else:
        body_pointer = "/paths/" + _escape_pointer(MAIL_SEND_PATH) + "/post/requestBody"
    schema_pointer = f"{body_pointer}/content/{_escape_pointer('application/json')}/schema"

    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
    return Draft202012Validator(
        {"$ref": f"{SPEC_URI}#{schema_pointer}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def validate_sendgrid_payload(payload: Any) -> None:
    """Raise :class:`jsonschema.ValidationError` unless ``payload`` is a valid Mail Send body.

    Besides the published schema, checks one documented rule the schema cannot express:
    ``text/plain`` content must come before ``text/html``. Skips or fails the calling test
    when the spec is missing (see ``tests/spec_schemas.py``).
    """
    spec_schemas.require_spec("sendgrid")  # checked on every call: the validator is cached
    error = best_match(mail_send_validator().iter_errors(payload))
    if error is not None:
        raise error
    types = [c.get("type") for c in payload.get("content", []) if isinstance(c, dict)]
    both = "text/plain" in types and "text/html" in types
    if both and types.index("text/plain") > types.index("text/html"):
        raise ValidationError("content: text/plain must come before text/html")
