"""Packaging: the only installed import name is ``mxfp4``.

``reference/`` installs as ``mxfp4.reference`` and ``triton_kernels/`` as ``mxfp4.triton_kernels`` so that we never
shadow OpenAI's top-level ``triton_kernels`` package (which vLLM installs) or claim a name as generic as ``reference``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# source directory -> installed package
PACKAGE_DIRS = {"mxfp4": "mxfp4", "reference": "mxfp4/reference", "triton_kernels": "mxfp4/triton_kernels"}
FOREIGN_TOP_LEVEL = ("triton_kernels", "reference")


def run_outside_repo(tmp_path: Path, script: str) -> dict:
    """Run ``script`` in a fresh interpreter whose working directory is outside the repo (so the repo root is not
    on sys.path), returning the JSON it prints last."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_top_level_triton_kernels_or_reference(tmp_path):
    found = run_outside_repo(
        tmp_path,
        """
        import importlib.util, json, sys
        out = {}
        for name in ("triton_kernels", "reference", "mxfp4", "mxfp4.reference", "mxfp4.triton_kernels"):
            spec = importlib.util.find_spec(name)
            out[name] = None if spec is None else (spec.origin or str(list(spec.submodule_search_locations or [])))
        print(json.dumps(out))
        """,
    )
    for name in FOREIGN_TOP_LEVEL:
        # Another project's package of that name may be installed (vLLM brings OpenAI's triton_kernels); ours must
        # not be what it finds.
        origin = found[name]
        assert origin is None or str(REPO) not in origin, f"top-level {name!r} resolves into this repo: {origin}"
    for name in ("mxfp4", "mxfp4.reference", "mxfp4.triton_kernels"):
        assert found[name] is not None, f"{name} is not importable from outside the repo"


def test_subpackages_import_from_outside_the_repo(tmp_path):
    found = run_outside_repo(
        tmp_path,
        """
        import json
        import mxfp4, mxfp4.reference, mxfp4.triton_kernels, mxfp4.spec, mxfp4.testing
        from mxfp4.reference import quantize, dequantize, pack, unpack, matmul
        print(json.dumps({"reference": mxfp4.reference.__name__, "kernels": mxfp4.triton_kernels.__name__}))
        """,
    )
    assert found == {"reference": "mxfp4.reference", "kernels": "mxfp4.triton_kernels"}


INSPECT_INSTALLED = """
import importlib.metadata, importlib.util, json
from pathlib import Path
out = {"installed": False}
try:
    dist = importlib.metadata.distribution("mxfp4")
except importlib.metadata.PackageNotFoundError:
    dist = None
if dist is not None:
    files = [str(f) for f in dist.files or []]
    finders = [f for f in dist.files or [] if f.name.startswith("__editable__") and f.name.endswith("_finder.py")]
    mapping = None
    if finders:
        spec = importlib.util.spec_from_file_location("_mxfp4_editable_finder", dist.locate_file(finders[0]))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        mapping = dict(module.MAPPING)
    out = {"installed": True, "location": str(dist.locate_file("")), "top_level": dist.read_text("top_level.txt"),
           "files": files, "mapping": mapping}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """What the installed distribution declares, read in a process started outside the repo: inside it, an
    ``mxfp4.egg-info`` left in the checkout by ``pip install -e .`` (it lists source paths) would be found first."""
    found = run_outside_repo(tmp_path_factory.mktemp("outside"), INSPECT_INSTALLED)
    if not found["installed"]:
        pytest.skip("mxfp4 is not installed as a distribution (tests run from a bare checkout)")
    return found


def test_installed_distribution_provides_only_mxfp4(installed):
    if installed["top_level"] is not None:
        assert installed["top_level"].split() == ["mxfp4"], installed["top_level"]
    for file in installed["files"]:
        first = Path(file).parts[0]
        assert first not in FOREIGN_TOP_LEVEL, f"the installed distribution ({installed['location']}) ships {file}"
        assert file not in {f"{n}.py" for n in FOREIGN_TOP_LEVEL}, file


def test_editable_finder_maps_only_mxfp4_names(installed):
    """An editable install (setuptools' finder) maps import names to source folders: only mxfp4 and its children."""
    mapping = installed["mapping"]
    if mapping is None:
        pytest.skip("mxfp4 is not an editable install with a finder (regular or path-file install)")
    assert set(mapping) == {"mxfp4", "mxfp4.reference", "mxfp4.triton_kernels"}, mapping
    assert Path(mapping["mxfp4.reference"]).name == "reference"
    assert Path(mapping["mxfp4.triton_kernels"]).name == "triton_kernels"


def test_wheel_contains_every_module_under_mxfp4_only(tmp_path):
    """Build a wheel from a copy of the sources: its only top-level package is mxfp4, and every module of mxfp4/,
    reference/ and triton_kernels/ is in it (pyproject lists packages explicitly, so a new subpackage that is not
    listed would be silently left out of a regular install)."""
    try:
        import setuptools
    except ImportError:
        pytest.skip("setuptools is not installed: cannot build a wheel without network access")
    if int(setuptools.__version__.split(".")[0]) < 64:
        pytest.skip(f"setuptools {setuptools.__version__} is older than the 64 that pyproject.toml requires")
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    (source / "README.md").write_text((REPO / "README.md").read_text() if (REPO / "README.md").exists() else "mxfp4\n")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for directory in PACKAGE_DIRS:
        shutil.copytree(REPO / directory, source / directory, ignore=ignore)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(source),
         "-w", str(tmp_path / "dist")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("mxfp4-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"mxfp4"}, sorted(top)
    missing = []
    for directory, installed in PACKAGE_DIRS.items():
        for module in sorted((REPO / directory).rglob("*.py")):
            if "__pycache__" in module.parts:
                continue
            target = f"{installed}/{module.relative_to(REPO / directory).as_posix()}"
            if target not in names:
                missing.append(f"{module.relative_to(REPO)} -> {target}")
    assert not missing, "left out of the wheel (add the package to [tool.setuptools] packages):\n" + "\n".join(missing)


def fresh_machine_commands() -> list[str]:
    """The shell commands of README.md's "Set-up on a fresh machine" section, in order."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in section.split("```bash\n")[1:]:
        commands += [line.strip() for line in block.split("```", 1)[0].splitlines() if line.strip()]
    return commands


def test_readme_set_up_has_a_demo_and_a_test_command():
    commands = fresh_machine_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.startswith("pip install torch==2.13.0") and demo.endswith("python -m mxfp4 demo"), demo
    assert tests.startswith("pip install torch==2.13.0") and tests.endswith("python -m pytest -q"), tests


def test_ci_runs_exactly_the_readme_test_command():
    script = (REPO / ".ci" / "run").read_text()
    lines = [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "set -euo pipefail" in lines
    test_command = fresh_machine_commands()[1]
    running = [line for line in lines if test_command in line]
    assert running, f".ci/run does not run the README's test command {test_command!r}"
    assert lines.index("pip install torch==2.13.0") < lines.index(running[0]), "torch must be pre-installed first"
    assert "5" in script.split(test_command, 1)[1], ".ci/run must treat pytest's exit code 5 (no tests) as failure"
