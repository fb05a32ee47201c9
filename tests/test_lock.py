"""The lock agrees with pyproject.toml.

pyproject.toml says which packages optin needs and which versions are compatible;
uv.lock (refreshed by ``.ci/lock``) pins one version of each, and requirements/run.txt
and requirements/test.txt are its exports that the README's pip commands install. A
dependency added to pyproject.toml without refreshing the lock would be missing on a
fresh install, and one dropped from pyproject.toml would still be installed: both fail here.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parents[1]
RUNTIME = ""  # the group name of pyproject's [project] dependencies, next to its extras
# requirements file → the pyproject groups it installs.
EXPORTS = {"requirements/run.txt": (RUNTIME,), "requirements/test.txt": (RUNTIME, "test")}


def _load(path: str) -> dict[str, Any]:
    return tomllib.loads((ROOT / path).read_text())


def declared(project: dict[str, Any]) -> dict[str, list[Requirement]]:
    """pyproject's requirements per group: the runtime dependencies, then each extra."""
    groups = {RUNTIME: project.get("dependencies", [])} | project.get("optional-dependencies", {})
    return {group: [Requirement(line) for line in lines] for group, lines in groups.items()}


def locked_versions(lock: dict[str, Any]) -> dict[str, list[Version]]:
    """Every version uv.lock pins, by package (a fork by platform may pin two)."""
    versions: dict[str, list[Version]] = defaultdict(list)
    for package in lock["package"]:
        versions[canonicalize_name(package["name"])].append(Version(package["version"]))
    return versions


def locked_top_level(lock: dict[str, Any], project_name: str) -> dict[str, dict[str, set[str]]]:
    """The lock's own record of what the project asks for: group → package → extras."""
    (entry,) = [p for p in lock["package"] if p["name"] == canonicalize_name(project_name)]
    groups = {RUNTIME: entry.get("dependencies", [])} | entry.get("optional-dependencies", {})
    return {group: {canonicalize_name(d["name"]): set(d.get("extra", [])) for d in deps}
            for group, deps in groups.items()}


def lock_disagreements(project: dict[str, Any], lock: dict[str, Any]) -> list[str]:
    """What a relock would change: missing, extra or out-of-range top-level packages."""
    wanted = declared(project)
    have = locked_top_level(lock, project["name"])
    versions = locked_versions(lock)
    problems = [f"extra `{group}` is locked but not in pyproject.toml"
                for group in sorted(have.keys() - wanted.keys())]
    for group, requirements in wanted.items():
        label = f"extra `{group}`" if group else "dependencies"
        locked = have.get(group, {})
        names = {canonicalize_name(r.name) for r in requirements}
        problems += [f"{label}: {name} is locked but pyproject.toml does not ask for it"
                     for name in sorted(locked.keys() - names)]
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            if name not in locked:
                problems.append(f"{label}: {requirement} is not in the lock")
                continue
            if not requirement.extras <= locked[name]:
                problems.append(f"{label}: {requirement} is locked without extras "
                                f"{sorted(requirement.extras - locked[name])}")
            problems += [f"{label}: {requirement} is locked at {version}"
                         for version in versions[name]
                         if not requirement.specifier.contains(version, prereleases=True)]
    return problems


@dataclass
class Pin:
    """One package of a uv export: its version, the packages it is there for, its hashes."""

    version: str
    via: set[str] = field(default_factory=set)
    hashed: bool = False


def exported_pins(text: str) -> dict[str, Pin]:
    """Reads a uv export (pip's requirements format with uv's `# via` annotations)."""
    pins: dict[str, Pin] = {}
    pin: Pin | None = None
    for line in text.splitlines():
        if requirement := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", line):
            pin = pins[canonicalize_name(requirement[1])] = Pin(requirement[2])
        elif pin is None:
            continue
        elif line.strip().startswith("--hash="):
            pin.hashed = True
        elif via := re.fullmatch(r"\s+# via (\S+)|\s+#   (\S+)", line):
            pin.via.add(canonicalize_name(via[1] or via[2]))
    return pins


def test_the_lock_agrees_with_pyproject():
    assert lock_disagreements(_load("pyproject.toml")["project"], _load("uv.lock")) == []


def test_the_lock_was_made_from_these_ranges():
    """uv.lock records the ranges it resolved; a range changed since needs a relock too."""
    project = _load("pyproject.toml")["project"]
    (entry,) = [p for p in _load("uv.lock")["package"] if p["name"] == canonicalize_name(project["name"])]

    def key(name: str, specifier: str, extras: list[str], group: str) -> tuple[Any, ...]:
        return canonicalize_name(name), SpecifierSet(specifier), frozenset(extras), group

    extra_marker = re.compile(r"extra == '([^']+)'")
    recorded = {key(d["name"], d.get("specifier", ""), d.get("extras", []),
                    m[1] if (m := extra_marker.search(d.get("marker", ""))) else RUNTIME)
                for d in entry["metadata"]["requires-dist"]}
    wanted = {key(r.name, str(r.specifier), sorted(r.extras), group)
              for group, requirements in declared(project).items() for r in requirements}
    assert recorded == wanted
    assert set(entry["metadata"].get("provides-extras", [])) == set(project.get("optional-dependencies", {}))


@pytest.mark.parametrize("path", EXPORTS)
def test_the_pip_requirements_are_the_lock_exported(path):
    """What the README installs: the lock's versions, each with hashes, the right top level."""
    project = _load("pyproject.toml")["project"]
    versions = locked_versions(_load("uv.lock"))
    pins = exported_pins((ROOT / path).read_text())
    assert pins, f"{path} pins nothing"
    not_locked = {name: pin.version for name, pin in pins.items()
                  if Version(pin.version) not in versions[name]}
    assert not_locked == {}
    assert sorted(name for name, pin in pins.items() if not pin.hashed) == []
    groups = declared(project)
    wanted = {canonicalize_name(r.name) for group in EXPORTS[path] for r in groups[group]}
    top_level = {name for name, pin in pins.items() if canonicalize_name(project["name"]) in pin.via}
    assert top_level == wanted


def _new_disagreements(changed: dict[str, Any], project: dict[str, Any], lock: dict[str, Any]) -> set[str]:
    return set(lock_disagreements(changed, lock)) - set(lock_disagreements(project, lock))


def test_a_dependency_added_without_relocking_is_reported():
    project, lock = _load("pyproject.toml")["project"], _load("uv.lock")
    added = copy.deepcopy(project)
    added["dependencies"].append("no-such-package>=1")
    added["optional-dependencies"]["test"].append("another-missing-tool")
    assert _new_disagreements(added, project, lock) == {
        "dependencies: no-such-package>=1 is not in the lock",
        "extra `test`: another-missing-tool is not in the lock",
    }


def test_a_dependency_dropped_or_raised_without_relocking_is_reported():
    project, lock = _load("pyproject.toml")["project"], _load("uv.lock")
    versions = locked_versions(lock)
    changed = copy.deepcopy(project)
    dropped = canonicalize_name(Requirement(changed["dependencies"].pop(0)).name)
    raised = Requirement(changed["optional-dependencies"]["test"][0])
    pinned = max(versions[canonicalize_name(raised.name)])
    changed["optional-dependencies"]["test"][0] = f"{raised.name}>{pinned}"
    assert _new_disagreements(changed, project, lock) == {
        f"dependencies: {dropped} is locked but pyproject.toml does not ask for it",
        f"extra `test`: {raised.name}>{pinned} is locked at {pinned}",
    }


def test_the_export_parser_reads_both_via_forms():
    pins = exported_pins(
        "alembic==1.20.1 \\\n    --hash=sha256:aa\n    # via\n    #   flask-migrate\n    #   optin\n"
        "colorama==0.4.6 ; sys_platform == 'win32' \\\n    --hash=sha256:bb\n    # via click\n"
        "psycopg[binary]==3.2.1\n    # via optin\n"
    )
    assert pins == {"alembic": Pin("1.20.1", {"flask-migrate", "optin"}, hashed=True),
                    "colorama": Pin("0.4.6", {"click"}, hashed=True),
                    "psycopg": Pin("3.2.1", {"optin"})}
