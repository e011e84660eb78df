"""C++ users: find_package(xshm) + xshm::xshm, against `cmake --install` of the source tree and
against the CMake package shipped inside the installed wheel (xshm.get_cmake_dir())."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import xshm

ROOT = Path(__file__).resolve().parents[2]
CONSUMER = ROOT / "tests" / "cmake_consumer"


def _build_and_run(tmp: Path, xshm_dir: str) -> str:
    build = tmp / "build"
    subprocess.run(
        ["cmake", "-S", str(CONSUMER), "-B", str(build), f"-Dxshm_DIR={xshm_dir}"],
        check=True,
    )
    subprocess.run(["cmake", "--build", str(build)], check=True)
    return subprocess.run([str(build / "app")], check=True, capture_output=True, text=True).stdout


def test_find_package_against_cmake_install(tmp_path: Path) -> None:
    if not (ROOT / "CMakeLists.txt").exists():
        pytest.skip("no source tree beside these tests")
    prefix = tmp_path / "prefix"
    src_build = tmp_path / "xshm-build"
    subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(src_build),
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
            "-DXSHM_BUILD_TESTS=OFF",
            "-DXSHM_BUILD_EXAMPLES=OFF",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(["cmake", "--install", str(src_build)], check=True, capture_output=True)
    assert (prefix / "include" / "xshm" / "xshm.hpp").exists()
    cfg = next(prefix.glob("lib*/cmake/xshm/xshmConfig.cmake"))
    assert _build_and_run(tmp_path, str(cfg.parent)) == "from an installed package 7\n"


def test_find_package_against_the_wheel(tmp_path: Path) -> None:
    cmake_dir = Path(xshm.get_cmake_dir())
    assert (cmake_dir / "xshmConfig.cmake").exists(), cmake_dir
    assert Path(xshm.get_include(), "xshm", "xshm.hpp").exists()
    assert _build_and_run(tmp_path, str(cmake_dir)) == "from an installed package 7\n"
