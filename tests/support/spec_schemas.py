"""Validate request bodies against the providers' published API specs.

Each adapter's bodies are checked against the vendor's own schema, not our reading of their
docs. The schema is located by following the batch endpoint's ``POST`` in the spec (no
hard-coded copy): ``requestBody`` in OpenAPI 3 (Resend, SendGrid), the ``in: body`` parameter
in Swagger 2.0 (Postmark). ``$ref``s resolve through a ``referencing.Registry`` rooted at the
whole spec document, and formats are asserted.

What the published specs cannot say is checked too, clearly separated
(:func:`documented_rules`), each rule quoting where it comes from.

Where the specs come from, and what happens without them (the one place that decides it):

* The specs live beside the repository in ``<repo>/../shared/specs``, which a fresh clone
  does not have. ``NUDGE_SPECS_DIR`` points elsewhere (a folder laid out the same way; a
  non-existent one simulates a fresh clone), ``NUDGE_SENDGRID_SPEC`` at SendGrid's file alone.
* ``NUDGE_REQUIRE_SPECS=1`` (set by ``.ci/run``; any value but empty, ``0``, ``false`` or
  ``no``) makes a missing spec *fail* every test that needs it, with the missing path.
  Without it those tests *skip*, all with the same reason, and every other test still runs.
* A test needs a spec when it validates against one: :func:`validate_request_body` and
  ``tests.support.sendgrid_schema.validate_sendgrid_payload`` skip or fail through
  :func:`require_spec`. :class:`tests.support.esp_server.EspServer` checks request bodies against
  the schemas at hand (:func:`warm_up`; the webhook's schema is ours and always there): with
  ``validate=("postmark",)`` a missing Postmark spec fails its start under
  ``NUDGE_REQUIRE_SPECS`` and leaves Postmark bodies unchecked otherwise, so the server's
  other tests (retries, errors...) still run on a fresh clone.
* ``tests/conftest.py`` clears every ``NUDGE_*`` variable before each test, so these three
  are read once, when this module is first imported (at collection: the test modules and
  ``tests/esp_server.py`` import it at top level).

Spec quirks worth knowing:

* Postmark's Swagger 2.0 ``SendEmailRequest`` predates ``Metadata`` and ``MessageStream`` (both
  documented on postmarkapp.com), declares no required field and allows any extra property, so
  the schema alone accepts almost anything; hence the extra rules.
* Resend's spec documents the ``Idempotency-Key`` header (maxLength 256) but not the
  ``x-batch-validation`` header nor any error answers; tag character rules are prose only.

Usage from another test::

    from tests.support.spec_schemas import validate_request_body
    validate_request_body("postmark", recorded_request.body)  # raises jsonschema.ValidationError
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs installed; only read here
from jsonschema import Draft4Validator, Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4, DRAFT202012

from dagster_project.providers.webhook import WEBHOOK_REQUEST_SCHEMA

SPECS_ENV = "NUDGE_SPECS_DIR"
SENDGRID_SPEC_ENV = "NUDGE_SENDGRID_SPEC"
REQUIRE_ENV = "NUDGE_REQUIRE_SPECS"
DEFAULT_SPECS_DIR = Path(__file__).resolve().parents[3] / "shared" / "specs"

# Read at import, before conftest's per-test clean-up of NUDGE_* (see the module docstring);
# tests of these rules patch this dict.
SETTINGS = {name: os.environ.get(name, "") for name in (SPECS_ENV, SENDGRID_SPEC_ENV, REQUIRE_ENV)}

# provider -> (spec file under the specs folder, batch endpoint path)
SPECS: dict[str, tuple[str, str]] = {
    "postmark": ("postmark/server_swagger.yaml", "/email/batch"),
    "resend": ("resend/resend.yaml", "/emails/batch"),
    "sendgrid": ("sendgrid/tsg_mail_v3.json", "/v3/mail/send"),
}

_RESEND_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def specs_required() -> bool:
    """Whether a missing spec fails the tests that need it (else they skip)."""
    return SETTINGS[REQUIRE_ENV].strip().lower() not in ("", "0", "false", "no")


def specs_dir() -> Path:
    return Path(SETTINGS[SPECS_ENV] or DEFAULT_SPECS_DIR)


def spec_path(provider: str) -> Path:
    """Where the provider's published spec is read from (it may not exist)."""
    if provider == "sendgrid" and SETTINGS[SENDGRID_SPEC_ENV]:
        return Path(SETTINGS[SENDGRID_SPEC_ENV])
    relative, _ = SPECS[provider]
    return specs_dir() / relative


def _missing(provider: str) -> Path | None:
    """None when the spec is on disk, else the path to name: the specs folder when it is
    missing altogether (so every skip gives the same reason), else the file."""
    path = spec_path(provider)
    if path.is_file():
        return None
    folder = specs_dir()
    return folder if path.is_relative_to(folder) and not folder.is_dir() else path


def spec_available(provider: str) -> bool:
    """Whether the provider's spec is on disk; if not, fails the calling test when
    ``NUDGE_REQUIRE_SPECS`` is set, else returns False."""
    missing = _missing(provider)
    if missing is not None and specs_required():
        pytest.fail(
            f"published specs not found at {missing}, and {REQUIRE_ENV} is set: put them in "
            f"<repo>/../shared/specs or point {SPECS_ENV} at them",
            pytrace=False,
        )
    return missing is None


def require_spec(provider: str) -> Path:
    """The provider's spec; without it, skips the calling test (fails it when
    ``NUDGE_REQUIRE_SPECS`` is set)."""
    if not spec_available(provider):
        reason = f"published specs not found at {_missing(provider)}"
        pytest.skip(f"{reason} (set {REQUIRE_ENV}=1 to require them)")
    return spec_path(provider)


@functools.cache
def load_spec(provider: str) -> dict[str, Any]:
    """The parsed spec document (YAML, or JSON, which YAML reads too)."""
    # libyaml's loader when present: the pure-Python one takes ~0.5 s for Resend's spec.
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    path = require_spec(provider)
    with path.open(encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=loader)
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not an OpenAPI/Swagger document")
    return document


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _follow(document: dict[str, Any], pointer: str) -> Any:
    node: Any = document
    for token in pointer.lstrip("/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def request_schema_pointer(document: dict[str, Any], path: str) -> str:
    """JSON pointer (inside ``document``) to the JSON body schema of ``POST path``."""
    operation_pointer = f"/paths/{_escape(path)}/post"
    operation = _follow(document, operation_pointer)
    if str(document.get("swagger", "")).startswith("2"):
        for i, parameter in enumerate(operation.get("parameters", [])):
            pointer = f"{operation_pointer}/parameters/{i}"
            if "$ref" in parameter:
                pointer = parameter["$ref"].removeprefix("#")
                parameter = _follow(document, pointer)
            if parameter.get("in") == "body":
                return f"{pointer}/schema"
        raise KeyError(f"POST {path} has no body parameter")
    pointer = f"{operation_pointer}/requestBody"
    body = operation["requestBody"]
    if "$ref" in body:
        pointer = body["$ref"].removeprefix("#")
    return f"{pointer}/content/{_escape('application/json')}/schema"


@functools.cache
def request_validator(provider: str) -> Validator:
    """A validator for the JSON body of the provider's batch endpoint."""
    if provider == "webhook":
        return Draft202012Validator(
            WEBHOOK_REQUEST_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
    document = load_spec(provider)
    _, path = SPECS[provider]
    pointer = request_schema_pointer(document, path)
    swagger2 = str(document.get("swagger", "")).startswith("2")
    openapi30 = str(document.get("openapi", "")).startswith("3.0")
    # Swagger 2.0 and OpenAPI 3.0 schemas are (close to) JSON Schema draft 4; 3.1 is 2020-12.
    cls: Any = Draft4Validator if swagger2 or openapi30 else Draft202012Validator
    uri = f"urn:nudge:spec:{provider}"
    resource = Resource.from_contents(
        document, default_specification=DRAFT4 if cls is Draft4Validator else DRAFT202012
    )
    registry: Registry[Any] = Registry().with_resource(uri, resource)
    validator: Validator = cls(
        {"$ref": f"{uri}#{pointer}"}, registry=registry, format_checker=cls.FORMAT_CHECKER
    )
    return validator


def documented_rules(provider: str, body: Any) -> list[str]:
    """Violations of documented rules the published schema does not express."""
    problems: list[str] = []
    if provider == "postmark" and isinstance(body, list):
        # postmarkapp.com, Batch emails: "up to 500 messages"; a message needs From, To and a
        # body (ErrorCode 300 otherwise); Metadata holds at most 10 fields.
        if len(body) > 500:
            problems.append(f"{len(body)} messages in one batch; Postmark accepts 500")
        for i, message in enumerate(body):
            if not isinstance(message, dict):
                continue
            for name in ("From", "To"):
                if not message.get(name):
                    problems.append(f"[{i}] has no {name}")
            if not message.get("HtmlBody") and not message.get("TextBody"):
                problems.append(f"[{i}] has neither HtmlBody nor TextBody")
            metadata = message.get("Metadata", {})
            if not isinstance(metadata, dict) or len(metadata) > 10:
                problems.append(f"[{i}] Metadata must be an object of at most 10 fields")
            elif not all(isinstance(v, str) for v in metadata.values()):
                problems.append(f"[{i}] Metadata values must be strings")
    if provider == "resend" and isinstance(body, list):
        # resend.yaml: "Trigger up to 100 batch emails at once"; Tag.name/value: "can only
        # contain ASCII letters, numbers, underscores, or dashes ... no more than 256".
        if len(body) > 100:
            problems.append(f"{len(body)} emails in one batch; Resend accepts 100")
        for i, email in enumerate(body):
            for tag in email.get("tags", []) if isinstance(email, dict) else []:
                for part in ("name", "value"):
                    if not _RESEND_TAG.match(str(tag.get(part, ""))):
                        problems.append(
                            f"[{i}] tag {part} {tag.get(part)!r} has invalid characters"
                        )
    return problems


def warm_up(required: Iterable[str] = ()) -> frozenset[str]:
    """Build the validator of every schema at hand now (e.g. before a server starts timing)
    and return the dialects they cover: ``webhook`` (our own schema) and each provider whose
    published spec is present. A ``required`` provider without its spec fails the calling
    test under ``NUDGE_REQUIRE_SPECS`` (see :func:`spec_available`)."""
    from tests.support.sendgrid_schema import mail_send_validator

    required = set(required)
    if required - {*SPECS, "webhook"}:
        raise ValueError(f"no schema for {sorted(required - {*SPECS, 'webhook'})}")
    available = {"webhook"}
    request_validator("webhook")
    for provider in SPECS:
        present = spec_available(provider) if provider in required else not _missing(provider)
        if present:
            available.add(provider)
            if provider == "sendgrid":
                mail_send_validator()
            else:
                request_validator(provider)
    return frozenset(available)


def validate_request_body(provider: str, body: Any) -> None:
    """Raise :class:`jsonschema.ValidationError` unless ``body`` is a valid request body.

    ``provider``: ``postmark``, ``resend``, ``sendgrid`` or ``webhook`` (our own contract).
    Skips or fails the calling test when the provider's published spec is missing.
    """
    if provider in SPECS:
        require_spec(provider)  # checked on every call: the validators are cached
    if provider == "sendgrid":
        from tests.support.sendgrid_schema import validate_sendgrid_payload

        validate_sendgrid_payload(body)
        return
    error = best_match(request_validator(provider).iter_errors(body))
    if error is not None:
        raise error
    problems = documented_rules(provider, body)
    if problems:
        raise ValidationError(f"{provider}: " + "; ".join(problems))
