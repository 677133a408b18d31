"""The architecture's boundaries, checked by one tool: the import-linter contracts in pyproject.toml.

The contracts name whole packages (``dynlab.engines``, ``dynlab.views``) and every Qt-free
lab module, so a new module is covered the day it is added. Import-linter reads the import
graph from installed files; an editable install of the package-dir mapping (lab/ -> dynlab)
has none, so the contracts run against a ``pip install --target`` tree of the checkout.
Two things contracts cannot say are checked here too: that the Qt-free core really runs
with Qt absent, and that the UI imports torch only lazily (never at module level).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QT = ("PySide6", "pyqtgraph", "vispy", "shiboken6")
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CONTRACTS = {c["name"]: c for c in CONFIG["tool"]["importlinter"]["contracts"]}
QT_FREE_LAB = next(c for name, c in CONTRACTS.items() if name.startswith("the Qt-free lab"))

# One import per contract that breaks it, written into the install tree: the contracts
# must notice each (a checker that can never fail checks nothing). The engines and views
# contracts cover whole packages, so a brand-new module there is caught; the Qt-free lab
# shares its package with dynlab.ui, so there a new module is caught by
# test_every_qt_free_lab_module_is_under_contract and the canary edits an existing one.
NEW_MODULES = {
    "dynlab/engines/_canary.py": "import PySide6.QtCore\n",
    "dynlab/views/_canary.py": "import torch\n",
}
EDITED_MODULE, EDIT = "dynlab/player.py", "\nimport dynlab.views\n"


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-logo", "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree), "HOME": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def install_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout, installed as the wheel would install it (no dependencies)."""
    tree = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tree), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tree


def test_import_contracts_are_kept(install_tree: Path) -> None:
    proc = _lint_imports(install_tree)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in proc.stdout, proc.stdout


def test_import_contracts_catch_imports_that_break_them(install_tree: Path) -> None:
    edited = install_tree / EDITED_MODULE
    original = edited.read_text(encoding="utf-8")
    for rel, text in NEW_MODULES.items():
        (install_tree / rel).write_text(text, encoding="utf-8")
    edited.write_text(original + EDIT, encoding="utf-8")
    try:
        proc = _lint_imports(install_tree)
    finally:
        for rel in NEW_MODULES:
            (install_tree / rel).unlink()
        edited.write_text(original, encoding="utf-8")
    assert proc.returncode != 0
    assert f"Contracts: 0 kept, {len(CONTRACTS)} broken." in proc.stdout, proc.stdout
    for importer, imported in (
        ("dynlab.engines._canary", "PySide6"),
        ("dynlab.views._canary", "torch"),
        ("dynlab.player", "dynlab.views"),
    ):
        assert f"{importer} -> {imported}" in proc.stdout, proc.stdout


def test_every_qt_free_lab_module_is_under_contract() -> None:
    """The Qt-free lab is a list of modules (``dynlab.ui`` lives in the same package): a new
    module in lab/ must join that list, or a Qt import in it would go unnoticed."""
    lab = ROOT / "lab"
    modules = {f"dynlab.{p.stem}" for p in lab.glob("*.py") if p.stem != "__init__"}
    modules |= {f"dynlab.{p.parent.name}" for p in lab.glob("*/__init__.py") if p.parent.name != "ui"}
    assert modules - set(QT_FREE_LAB["source_modules"]) == set(), "add these to the Qt-free lab contract"
    assert set(QT_FREE_LAB["source_modules"]) <= modules, "the contract names modules that do not exist"
    for name, package in (("engines", "dynlab.engines"), ("views", "dynlab.views")):
        contract = next(c for n, c in CONTRACTS.items() if n.startswith(name))
        assert contract["source_modules"] == [package], f"the {name} contract must cover the whole package"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "lab" / "ui").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_ui_does_not_import_torch_at_module_level(path: Path) -> None:
    """torch costs seconds to import: the window must show first (contracts see every import,
    not only module-level ones, so this one is a walk over the top-level statements)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        assert not any(n.split(".")[0] == "torch" or n == "dynlab.engines.base" for n in names), path.name


def test_headless_core_runs_without_qt_installed(tmp_path: Path) -> None:
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
