"""pytest configuration for the benchmarks: ``pytest bench/ --benchmark-only``.

The files here are named ``bench_*.py`` (not ``test_*.py``, so the test suite never runs them); this hook collects
them when the directory is given. Files given by name are collected by pytest itself.
"""

import pytest


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
