"""The README's map of the code matches the tree, and its commands exist."""

from __future__ import annotations

import re

from dagster_project.cli import build_parser
from dagster_project.config import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()


def _map() -> str:
    return README[README.index("### Where things live") :]


def test_every_module_is_on_the_map_and_everything_on_it_exists() -> None:
    package = PROJECT_ROOT / "dagster_project"
    modules = {
        p.relative_to(package).as_posix() for p in package.rglob("*.py") if p.name != "__init__.py"
    }
    text = _map()
    missing = sorted(
        m
        for m in modules
        if m.rsplit("/", 1)[-1] not in text
        and f"`{m.rsplit('/', 1)[-1].removesuffix('.py')}`" not in text
    )
    assert missing == [], f"modules the README's map does not mention: {missing}"
    named = set(re.findall(r"`([a-z_]+\.py)`", text)) - {"conftest.py"}  # tests, not package
    names = {m.rsplit("/", 1)[-1] for m in modules}
    assert named <= names, f"the map names files that do not exist: {sorted(named - names)}"
    for folder in ("models", "dbt", "sql", "templates", "tests", "dagster_project/defs"):
        assert f"`{folder}/`" in text and (PROJECT_ROOT / folder).is_dir(), folder


def test_every_command_is_shown_in_the_readme() -> None:
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command in commands:
        assert f"nudge {command}" in README, command
