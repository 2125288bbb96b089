from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dagster_project.landing import LandingStore
from dagster_project.links import LinkSettings
from tests.support.service import Service, running_service

SECRET = "s" * 40
OLD_SECRET = "o" * 40


@pytest.fixture
def links() -> LinkSettings:
    return LinkSettings.build(
        public_url="http://127.0.0.1:8080", secret=SECRET, previous_secret=OLD_SECRET
    )


@pytest.fixture
def store(tmp_path: Path) -> LandingStore:
    return LandingStore(tmp_path / "landing.sqlite")


@pytest.fixture
def service(links: LinkSettings, store: LandingStore) -> Iterator[Service]:
    with running_service(links, store) as running:
        yield running
