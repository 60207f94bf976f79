"""`loopwise` imports no service; a service imports only `loopwise`, itself and third parties."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _service_packages() -> dict[str, Path]:
    return {p.name: p for p in ROOT.glob("services/*/src/loopwise_*") if p.is_dir()}


def test_there_are_service_packages_to_check() -> None:
    assert len(_service_packages()) >= 7


def test_shared_library_imports_no_service() -> None:
    services = set(_service_packages())
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & services)
        for path in (ROOT / "shared" / "src" / "loopwise").rglob("*.py")
        if _imports(path) & services
    }
    assert offenders == {}


def test_services_import_only_loopwise_themselves_and_third_parties() -> None:
    packages = _service_packages()
    offenders: dict[str, list[str]] = {}
    for name, package_dir in packages.items():
        for path in package_dir.rglob("*.py"):
            bad = sorted(
                m
                for m in _imports(path)
                if (m.startswith("loopwise_") and m != name) or m == "tests"
            )
            if bad:
                offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}
