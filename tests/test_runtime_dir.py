"""The runtime directory: private, and a loud warning when it is not memory-backed."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from zapgate.gateway.config import default_runtime_dir
from zapgate.gateway.connections.runtime_dir import filesystem_of, prepare_runtime_dir


def test_dev_shm_is_memory_backed_and_the_default() -> None:
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm on this system")
    assert filesystem_of(Path("/dev/shm")) == "tmpfs"
    assert default_runtime_dir(Path("data")).is_relative_to("/dev/shm")


def test_a_disk_directory_is_made_private_with_a_loud_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if filesystem_of(tmp_path) in {"tmpfs", "ramfs"}:
        pytest.skip("the test directory is itself on tmpfs here")
    target = tmp_path / "runtime"
    with caplog.at_level(logging.WARNING):
        prepare_runtime_dir(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert "NOT ON MEMORY-BACKED STORAGE" in caplog.text


def test_a_tmpfs_directory_gives_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    if filesystem_of(Path("/dev/shm")) != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm")
    target = Path("/dev/shm") / f"zapgate-test-{id(caplog)}"
    try:
        with caplog.at_level(logging.WARNING):
            prepare_runtime_dir(target)
        assert caplog.text == ""
    finally:
        target.rmdir()


def test_an_open_runtime_dir_is_warned_about_and_made_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "runtime"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    with caplog.at_level(logging.WARNING):
        prepare_runtime_dir(target)
    assert f"RUNTIME DIR {target} IS READABLE BY OTHER USERS" in caplog.text
    assert f"chmod 700 {target}" in caplog.text
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_missing_parents_are_created_private(tmp_path: Path) -> None:
    target = tmp_path / "zapgate-1000" / "abc"
    prepare_runtime_dir(target)
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
