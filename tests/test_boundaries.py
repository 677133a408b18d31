"""The architecture's boundaries, checked: engines are Qt-free, views are torch-free."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QT = ("PySide6", "pyqtgraph", "vispy", "shiboken6")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("engines"), ids=lambda p: str(p.relative_to(ROOT)))
def test_engines_import_no_qt_lab_views_or_h5py(path):
    bad = {m for m in imports_of(path) if m.split(".")[0] in (*QT, "lab", "views", "h5py")}
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", modules("views"), ids=lambda p: str(p.relative_to(ROOT)))
def test_views_import_no_torch_or_engine_code(path):
    bad = {
        m
        for m in imports_of(path)
        if m.split(".")[0] == "torch" or m.startswith("dynlab.engines.") and m != "dynlab.engines.spec"
    }
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize(
    "path",
    [p for p in modules("lab") if "ui" not in p.relative_to(ROOT / "lab").parts],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_qt_free_lab_has_no_qt(path):
    imps = imports_of(path)
    bad = {m for m in imps if m.split(".")[0] in (*QT, "views")}
    if path.name == "cli.py":  # opens the app lazily, in the `dynlab`/open/replay branch only
        bad -= {"dynlab.ui.app"}
    bad |= {m for m in imps if m.startswith("dynlab.ui") and path.name != "cli.py"}
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", modules("lab/ui"), ids=lambda p: str(p.relative_to(ROOT)))
def test_ui_does_not_import_torch_at_module_level(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        assert not any(n.split(".")[0] == "torch" or n == "dynlab.engines.base" for n in names), path.name


def test_headless_core_runs_without_qt_installed(tmp_path):
    """Block every Qt module, then run an engine headless through runner and recorder."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {QT!r}:
            raise ImportError('Qt is blocked in this test: ' + name)
sys.meta_path.insert(0, Block())
from dynlab.cli import main
rc = main(['run', 'quadratic', '--steps', '20', '--record', {str(tmp_path / "x.h5")!r}, '--quiet'])
assert rc == 0, rc
assert main(['inspect', {str(tmp_path / "x.h5")!r}]) == 0
assert not any(m.split('.')[0] in {QT!r} for m in sys.modules)
print('OK')
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout
