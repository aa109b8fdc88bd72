"""What a wheel carries: every package folder of `gateway/`, `sessions/` and `ratelimit/`
is listed in pyproject.toml's `packages` (setuptools takes no subpackage it is not told
about; an editable install hides the omission, `pip install .` in the Dockerfile does not)."""

from __future__ import annotations

from pathlib import Path

from setuptools.config.pyprojecttoml import read_configuration

ROOT = Path(__file__).resolve().parent.parent


def package_folders(package: str, folder: Path) -> set[str]:
    return {
        ".".join([package, *init.parent.relative_to(folder).parts])
        for init in folder.rglob("__init__.py")
    }


def test_every_package_folder_is_in_the_wheel() -> None:
    setuptools = read_configuration(ROOT / "pyproject.toml")["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    for package in ("zapgate.gateway", "zapgate.sessions", "zapgate.ratelimit"):
        folder = ROOT / setuptools["package-dir"][package]
        assert package_folders(package, folder) - listed == set()
