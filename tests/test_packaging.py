"""Packaging: the wheel/sdist carry everything, an installed ``dynlab`` runs outside the
source tree, the desktop entry and icons install, the frozen entry point works, and
every preset has its gallery picture.

The wheel installs one import package, ``dynlab`` (from lab/, engines/, views/ and presets/),
as the distribution ``dynlab-desktop``. The install test puts the built wheel into a
``pip install --target`` tree and runs it with that tree first on ``PYTHONPATH``, from a
folder outside the checkout: that works the same inside a venv and outside one, and needs
no second copy of torch or PySide6 (over a GB). Isolation is checked instead: ``dynlab``
must be imported from the install tree, never from the source tree.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
ICON_SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)


def _source_presets() -> list[str]:
    return sorted(p.stem for p in (ROOT / "presets").glob("*.toml"))


def _last_step(stdout: str, stream: str) -> int | None:
    """The step of ``stream``'s final value as ``dynlab run`` prints it (``name @ step: ...``)."""
    m = re.search(rf"^{re.escape(stream)} @ (\d+):", stdout, re.MULTILINE)
    return int(m.group(1)) if m else None


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sdist, then the wheel built *from the sdist* (so a file missing from the sdist shows)."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels, sdists = list(out.glob("dynlab_desktop-*.whl")), list(out.glob("dynlab_desktop-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


@pytest.mark.slow
def test_wheel_holds_one_package_with_code_presets_and_thumbnails(built: dict[str, Path]) -> None:
    wheel = zipfile.ZipFile(built["wheel"])
    names = set(wheel.namelist())
    info = "dynlab_desktop-0.1.0.dist-info"
    assert {n.split("/")[0] for n in names} == {"dynlab", info}, "the only top-level package is dynlab"
    assert wheel.read(f"{info}/top_level.txt").decode().split() == ["dynlab"]
    metadata = wheel.read(f"{info}/METADATA").decode()
    assert re.search(r"^Name: dynlab-desktop$", metadata, re.MULTILINE), metadata[:300]
    assert re.search(r"^Requires-Python: >=3.11$", metadata, re.MULTILINE)
    for pkg in ("dynlab", "dynlab/ui", "dynlab/engines", "dynlab/views", "dynlab/builtin_presets"):
        assert f"{pkg}/__init__.py" in names, pkg
    for stem in _source_presets():
        assert f"dynlab/builtin_presets/{stem}.toml" in names, stem
    for png in (ROOT / "presets" / "thumbnails").glob("*.png"):
        assert f"dynlab/builtin_presets/thumbnails/{png.name}" in names, png.name
    for folder, package in (("engines", "dynlab/engines"), ("views", "dynlab/views"), ("lab", "dynlab")):
        for py in (ROOT / folder).rglob("*.py"):
            assert f"{package}/{py.relative_to(ROOT / folder).as_posix()}" in names, py
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel.read(f"{info}/entry_points.txt").decode())
    assert dict(entry_points["console_scripts"]) == {"dynlab": "dynlab.cli:main"}
    assert dict(entry_points["gui_scripts"]) == {"dynlab-gui": "dynlab.cli:gui_main"}


@pytest.mark.slow
def test_sdist_holds_tests_docs_and_packaging(built: dict[str, Path]) -> None:
    with tarfile.open(built["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    wanted = [
        "MANIFEST.in",
        "pyproject.toml",
        "tests/conftest.py",
        "docs/presets.md",
        "docs/DESIGN.md",
        "docs/recording-format.md",
        "tools/setup.sh",
        "tools/test.sh",
        "lab/qtcheck.py",
        "packaging/dynlab.spec",
        "packaging/entry.py",
        "packaging/build.sh",
        "packaging/dynlab.desktop",
        "packaging/icons/dynlab.svg",
        "tools/make_thumbnails.py",
    ]
    wanted += [f"presets/{s}.toml" for s in _source_presets()]
    wanted += [p.relative_to(ROOT).as_posix() for p in (ROOT / "presets" / "thumbnails").glob("*.png")]
    missing = [w for w in wanted if w not in names]
    assert not missing, f"missing from the sdist: {missing}"
    assert not any(n.endswith((".pyc", ".h5")) and not n.startswith("tests/data/") for n in names)


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_source_tree(built: dict[str, Path], tmp_path: Path) -> None:
    tree = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(tree),
            str(built["wheel"]),
        ],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tree.iterdir()) == ["bin", "dynlab", "dynlab_desktop-0.1.0.dist-info"]
    work = tmp_path / "elsewhere"
    work.mkdir()
    bindir = tree / "bin"
    # The install tree comes first on sys.path, ahead of any dynlab this interpreter already has
    # (the suite's own editable install): what runs below is the wheel's code.
    env = _clean_env(PYTHONPATH=str(tree), PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), cwd=work, capture_output=True, text=True, env=env, timeout=timeout)

    version = run(sys.executable, "-c", "import dynlab; print(dynlab.__version__)")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "0.1.0"
    where = run(
        sys.executable,
        "-c",
        "import dynlab, dynlab.engines, dynlab.views, dynlab.builtin_presets; from dynlab.presets import preset_dir;"
        " print(dynlab.__file__); print(dynlab.engines.__file__); print(dynlab.views.__file__);"
        " print(dynlab.builtin_presets.__file__); print(preset_dir())",
    )
    assert where.returncode == 0, where.stderr
    lines = where.stdout.split()
    assert len(lines) == 5, where.stdout
    for line in lines:
        assert Path(line).resolve().is_relative_to(tree.resolve()), (
            f"imported from outside the install: {line}"
        )
        assert not Path(line).resolve().is_relative_to(ROOT), line

    dynlab = str(bindir / "dynlab")
    listed = run(dynlab, "presets")
    assert listed.returncode == 0, listed.stderr
    for stem in _source_presets():
        assert stem in listed.stdout
    assert "(broken" not in listed.stdout, listed.stdout

    quad = run(dynlab, "run", "quadratic", "--steps", "20", "--quiet", "--record", "q.h5")
    assert quad.returncode == 0, quad.stderr
    assert _last_step(quad.stdout, "train_loss") == 19  # steps 0..19
    assert (work / "q.h5").is_file()
    inspect = run(dynlab, "inspect", "q.h5")
    assert inspect.returncode == 0 and "quadratic" in inspect.stdout, inspect.stderr
    # The public API from a script: `import dynlab` alone, h5py only once a recording is read.
    api = run(
        sys.executable,
        "-c",
        "import sys, dynlab; lazy = 'h5py' not in sys.modules\n"
        "with dynlab.Recording('q.h5') as rec: print(lazy, rec.engine, rec.read('train_loss')[0].tolist())",
    )
    assert api.returncode == 0, api.stderr
    assert api.stdout.strip().split(maxsplit=2) == ["True", "quadratic", str(list(range(20)))], api.stdout

    if "effective-step-size" in _source_presets():
        ess = run(dynlab, "run", "effective-step-size", "--steps", "5", "--quiet", "--device", "cpu")
        assert ess.returncode == 0, ess.stderr
        assert _last_step(ess.stdout, "effective_step_size") == 4, ess.stdout


def test_desktop_entry_is_valid() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in desktop files
    parser.read(PACKAGING / "dynlab.desktop", encoding="utf-8")
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Name"] and entry["Comment"]
    assert entry["Exec"] == "@EXEC@"  # build.sh fills in the installed command
    assert entry["Icon"] == "dynlab"
    assert entry["Terminal"] == "false"
    cats = [c for c in entry["Categories"].split(";") if c]
    # Desktop Menu spec: at least one main category, and the list ends with ';'.
    assert {"Education", "Science", "Development"} & set(cats) and entry["Categories"].endswith(";")


def test_icons_exist_at_every_size() -> None:
    pytest.importorskip("PySide6")
    from PySide6 import QtGui

    svg = (PACKAGING / "icons" / "dynlab.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for size in ICON_SIZES:
        img = QtGui.QImage(str(PACKAGING / "icons" / "png" / f"dynlab-{size}.png"))
        assert (img.width(), img.height()) == (size, size), size
        # Not blank: the centre is the opaque plot panel.
        assert QtGui.QColor(img.pixel(size // 2, size // 2)).alpha() == 255


def test_install_desktop_for_the_current_user(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    gui = fake_bin / "dynlab-gui"
    gui.write_text("#!/bin/sh\nexit 0\n")
    gui.chmod(0o755)
    data = tmp_path / "share"
    # A fresh "checkout" without dist/: the menu entry then points at the pip-installed command.
    env = _clean_env(
        XDG_DATA_HOME=str(data),
        HOME=str(tmp_path),
        PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        PYTHON=sys.executable,
    )
    if (ROOT / "dist" / "dynlab" / "dynlab").exists():
        pytest.skip("a built bundle in dist/ would take precedence over the PATH command")
    proc = subprocess.run(
        ["bash", str(PACKAGING / "build.sh"), "--desktop-only"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    desktop = (data / "applications" / "dynlab.desktop").read_text()
    assert f'Exec="{gui}"' in desktop
    assert (data / "icons" / "hicolor" / "scalable" / "apps" / "dynlab.svg").is_file()
    for size in ICON_SIZES:
        assert (data / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "dynlab.png").is_file()
    proc = subprocess.run(
        ["bash", str(PACKAGING / "build.sh"), "--uninstall-desktop"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0 and not (data / "applications" / "dynlab.desktop").exists()


def test_frozen_entry_point_runs_the_cli(tmp_path: Path) -> None:
    # entry.py is what PyInstaller freezes; unfrozen, freeze_support() is a no-op and it is the CLI.
    proc = subprocess.run(
        [sys.executable, str(PACKAGING / "entry.py"), "presets"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "quadratic" in proc.stdout


def test_every_preset_has_a_gallery_picture() -> None:
    pytest.importorskip("PySide6")
    from PySide6 import QtGui

    missing = [s for s in _source_presets() if not (ROOT / "presets" / "thumbnails" / f"{s}.png").is_file()]
    assert not missing, f"no thumbnail (run tools/make_thumbnails.py {' '.join(missing)})"
    for png in (ROOT / "presets" / "thumbnails").glob("*.png"):
        img = QtGui.QImage(str(png))
        assert not img.isNull() and img.width() >= 340 and img.height() >= 150, png.name


@pytest.mark.slow
def test_bundle_runs_when_built(tmp_path: Path) -> None:
    """Only where ``packaging/build.sh`` has been run (the bundle is never committed)."""
    exe = ROOT / "dist" / "dynlab" / "dynlab"
    if not exe.exists():
        pytest.skip("no bundle in dist/dynlab (run packaging/build.sh)")
    proc = subprocess.run(
        [str(exe), "run", "quadratic", "--steps", "20", "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert _last_step(proc.stdout, "train_loss") == 19
