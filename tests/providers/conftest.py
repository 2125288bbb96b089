"""The servers the provider tests talk to, started on loopback by the tests themselves.

* :func:`start_esp`: the scripted HTTP server that speaks SendGrid, Postmark, Resend and the
  webhook dialect (``tests/support/esp_server.py``); every server it started is checked at the
  end of the test for errors on its side and, when it validated bodies, schema violations;
* :func:`ses_emulator`: moto's SES v2 emulator, one per session, emptied for each test;
* :func:`sleeps`: a stand-in for ``time.sleep`` that records the waits a provider asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.esp_server import EspServer
from tests.support.factories import SleepRecorder
from tests.support.ses_emulator import SesEmulator, run_ses_emulator

# The region the SES tests sign for (test_ses.py uses the same).
SES_REGION = "eu-west-1"


@pytest.fixture
def start_esp() -> Iterator[Callable[..., EspServer]]:
    """Start an :class:`EspServer` with these settings; stopped and checked after the test."""
    started: list[EspServer] = []

    def start(**settings: Any) -> EspServer:
        server = EspServer(**settings).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    for server in started:
        assert server.errors == []
        assert server.schema_violations == []


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture(scope="session")
def moto_ses() -> Iterator[SesEmulator]:
    """moto's SES v2 emulator, once per session, with the senders' domain verified."""
    with run_ses_emulator(SES_REGION) as emulator:
        yield emulator


@pytest.fixture
def ses_emulator(moto_ses: SesEmulator) -> SesEmulator:
    """The SES emulator, emptied for this test."""
    moto_ses.clear()
    return moto_ses
