"""Every benchmark still imports (they run as `python -m bench.<name>`; importing one runs no benchmark)."""

import importlib
from pathlib import Path

import pytest

BENCHES = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "bench").glob("*.py"))


def test_there_are_benches():
    assert BENCHES


@pytest.mark.parametrize("name", BENCHES)
def test_bench_imports(name):
    module = importlib.import_module(f"bench.{name}")
    assert module.__file__.endswith(f"{name}.py")
