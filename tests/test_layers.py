"""The package's layers, checked on the source with `ast`: who may import whom.

Every .py file under app/, evaluator/, trainer/ and pricer/ is parsed; every import counts,
at module level or inside a function (or under `if TYPE_CHECKING:`), relative ones resolved,
and `import_module("literal")` too. A file is named by its installed module name
(`evaluator/stats/metrics.py` is `pricer.evaluator.stats.metrics`). Each rule is one test, so
a failure names the broken rule and lists `file:line: source` of each offence.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"app": "pricer.app", "evaluator": "pricer.evaluator", "trainer": "pricer.trainer", "pricer": "pricer"}
HEAVY = {"torch", "sqlalchemy", "pandas", "transformers"}


def module_name(path: str) -> str:
    """`evaluator/stats/metrics.py` -> `pricer.evaluator.stats.metrics` (a package by its `__init__`)."""
    folder, *rest = Path(path).with_suffix("").parts
    parts = [*FOLDERS[folder].split("."), *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


PATHS = sorted(str(p.relative_to(ROOT).as_posix()) for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))
KNOWN = {module_name(p) for p in PATHS}


@dataclass(frozen=True)
class Import:
    line: int
    name: str  # the absolute module imported: `from a.b import c` is `a.b.c` when that is a module of ours, else `a.b`
    imported: str | None = None  # the name taken from it, for `from ... import name`


@dataclass
class Module:
    path: str  # relative to the repository, posix
    source: str

    def __post_init__(self) -> None:
        self.name = module_name(self.path)
        self.tree = ast.parse(self.source, filename=self.path)
        self.lines = self.source.splitlines()

    def under(self, *folders: str) -> bool:
        return any(self.path.startswith(folder.rstrip("/") + "/") for folder in folders)

    def where(self, line: int) -> str:
        return f"{self.path}:{line}: {self.lines[line - 1].strip()}"

    def imports(self) -> list[Import]:
        package = self.name if self.path.endswith("__init__.py") else self.name.rpartition(".")[0]
        found = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                found += [Import(node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.append(Import(node.lineno, sub if sub in KNOWN else base, alias.name))
            elif (isinstance(node, ast.Call) and _called(node) in {"import_module", "__import__"} and node.args
                  and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found.append(Import(node.lineno, node.args[0].value))
        return found


def _called(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _top(name: str) -> str:
    return name.partition(".")[0]


# each rule: module -> offending lines (empty when it holds)


BARE_MODULE_STRING = re.compile(r"(app|evaluator|trainer)(\.\w+)+(:[\w.]+)?|(app|evaluator|trainer):[\w.]+")


def bare_top_level(m: Module) -> list[int]:
    """Imports name `pricer.…`, never a bare top-level `evaluator`, `app` or `trainer`; nor do module names in strings
    (`jinja2.PackageLoader("evaluator.views", ...)`, a uvicorn target `"app.main:create_app"`)."""
    strings = [n.lineno for n in ast.walk(m.tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and BARE_MODULE_STRING.fullmatch(n.value)]
    return [i.line for i in m.imports() if _top(i.name) in {"evaluator", "app", "trainer"}] + strings


def stats_pure(m: Module) -> list[int]:
    """evaluator/stats/ imports only the stdlib, numpy, pricer.evaluator.stats.*, .records and .errors."""
    if not m.under("evaluator/stats"):
        return []
    return [i.line for i in m.imports()
            if not (_top(i.name) in sys.stdlib_module_names or _top(i.name) == "numpy"
                    or _within(i.name, "pricer.evaluator.stats", "pricer.evaluator.records", "pricer.evaluator.errors"))]


def records_light(m: Module) -> list[int]:
    """pricer.evaluator.records imports no torch, sqlalchemy, pandas or transformers."""
    return [i.line for i in m.imports() if _top(i.name) in HEAVY] if m.name == "pricer.evaluator.records" else []


def sqlalchemy_only_in_store(m: Module) -> list[int]:
    """Only evaluator/store/ imports sqlalchemy."""
    return [] if m.under("evaluator/store") else [i.line for i in m.imports() if _top(i.name) == "sqlalchemy"]


def app_and_trainer_only_from_cli(m: Module) -> list[int]:
    """Only evaluator/cli/ imports pricer.app or pricer.trainer (besides each package itself)."""
    if m.under("evaluator/cli") or m.path == "pricer/__init__.py":  # pricer/__init__ re-exports lazily
        return []
    own = "pricer.app" if m.under("app") else "pricer.trainer" if m.under("trainer") else None
    return [i.line for i in m.imports() if _within(i.name, "pricer.app", "pricer.trainer") and not _within(i.name, own or "-")]


def views_plain(m: Module) -> list[int]:
    """evaluator/views/ imports no fastapi or starlette and does not print."""
    if not m.under("evaluator/views"):
        return []
    prints = [n.lineno for n in ast.walk(m.tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    return [i.line for i in m.imports() if _top(i.name) in {"fastapi", "starlette"}] + prints


APP_MAY_IMPORT = ("pricer.evaluator.service", "pricer.evaluator.errors", "pricer.evaluator.settings", "pricer.evaluator.records")


def app_uses_the_facade(m: Module) -> list[int]:
    """app/ takes from the evaluator only the facade package and the plain layers, and no private name of anything."""
    if not m.under("app"):
        return []
    bad = []
    for i in m.imports():
        if not _within(i.name, "pricer.evaluator"):
            continue
        ok = (i.name in APP_MAY_IMPORT or _within(i.name, "pricer.evaluator.stats", "pricer.evaluator.views")
              or (i.name == "pricer.evaluator.data" and i.imported is not None and i.imported.isupper()))  # constants only
        if not ok or _private(i.imported or ""):
            bad.append(i.line)
    for node in ast.walk(m.tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"})):  # a class's own state is its own
            bad.append(node.lineno)
        elif (isinstance(node, ast.Call) and _called(node) in {"getattr", "setattr", "hasattr", "delattr"} and len(node.args) > 1
              and isinstance(node.args[1], ast.Constant) and _private(str(node.args[1].value))):
            bad.append(node.lineno)
    return bad


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def threads_only_in_service(m: Module) -> list[int]:
    """threading.Thread (constructed or subclassed) only in evaluator/service/ and trainer/."""
    if m.under("evaluator/service", "trainer"):
        return []
    modules, names = set(), set()
    for node in ast.walk(m.tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "threading"}
        elif isinstance(node, ast.ImportFrom) and node.module == "threading":
            names |= {a.asname or a.name for a in node.names if a.name == "Thread"}

    def is_thread(expr: ast.expr) -> bool:
        return ((isinstance(expr, ast.Name) and expr.id in names)
                or (isinstance(expr, ast.Attribute) and expr.attr == "Thread" and isinstance(expr.value, ast.Name) and expr.value.id in modules))

    return [n.lineno for n in ast.walk(m.tree)
            if (isinstance(n, ast.Call) and is_thread(n.func)) or (isinstance(n, ast.ClassDef) and any(map(is_thread, n.bases)))]


RULES: dict[str, Callable[[Module], list[int]]] = {
    f.__name__: f for f in (bare_top_level, stats_pure, records_light, sqlalchemy_only_in_store, app_and_trainer_only_from_cli,
                            views_plain, app_uses_the_facade, threads_only_in_service)
}


def check(rule: str, path: str, source: str) -> list[str]:
    module = Module(path, source)
    return [module.where(line) for line in sorted(set(RULES[rule](module)))]


@pytest.mark.parametrize("rule", RULES)
def test_layer_rule(rule):
    if rule == "records_light" and "evaluator/records.py" not in PATHS:
        pytest.skip("no evaluator/records.py yet")
    offences = [o for path in PATHS for o in check(rule, path, (ROOT / path).read_text(encoding="utf-8"))]
    assert not offences, f"{rule}: {RULES[rule].__doc__ or ''}\n" + "\n".join(offences)


def test_every_package_folder_is_walked():
    assert {"pricer", "pricer.app", "pricer.evaluator", "pricer.evaluator.stats", "pricer.trainer"} <= KNOWN


# (rule, path, a violation, the same file keeping the rule): each rule catches what it is meant to
SYNTHETIC = [
    ("bare_top_level", "app/x.py", "def f():\n    from evaluator.data import load\n", "from pricer.evaluator.data import load\n"),
    ("bare_top_level", "trainer/x.py", "import trainer.config\n", "from . import config\n"),
    ("bare_top_level", "evaluator/views/x.py", "jinja2.PackageLoader('evaluator.views', 'templates')\n",
     "jinja2.PackageLoader('pricer.evaluator.views', 'templates')\nlog('app.state is set')\n"),
    ("bare_top_level", "evaluator/cli/x.py", "uvicorn.run('app.main:create_app', factory=True)\n",
     "uvicorn.run('pricer.app.main:create_app', factory=True)\n"),
    ("stats_pure", "evaluator/stats/x.py", "import numpy as np\ndef f():\n    import torch\n", "import math\nimport numpy as np\n"),
    ("stats_pure", "evaluator/stats/x.py", "from ..store.evaluations import Evaluation\n",
     "from pricer.evaluator.records import Evaluation\nfrom .metrics import METRICS\nfrom pricer.evaluator.errors import E\n"),
    ("stats_pure", "evaluator/stats/x.py", "import pandas\n", "from typing import TYPE_CHECKING\n"),
    ("records_light", "evaluator/records.py", "from dataclasses import dataclass\nimport sqlalchemy\n", "import numpy\n"),
    ("sqlalchemy_only_in_store", "evaluator/service/x.py", "from sqlalchemy.orm import Session\n", "from pricer.evaluator.store import jobs\n"),
    ("app_and_trainer_only_from_cli", "evaluator/service/x.py", "from pricer.app.main import app\n", "import pricer.evaluator.data\n"),
    ("app_and_trainer_only_from_cli", "app/x.py", "from pricer import trainer\n", "from pricer.app.schemas import Item\n"),
    ("app_and_trainer_only_from_cli", "trainer/x.py", "import_module('pricer.app.main')\n", "from .config import preset\n"),
    ("views_plain", "evaluator/views/x.py", "from fastapi import Request\n", "import jinja2\n"),
    ("views_plain", "evaluator/views/x.py", "def f():\n    print('hi')\n", "def f(out):\n    out.write('hi')\n"),
    ("app_uses_the_facade", "app/x.py", "from pricer.evaluator.service.worker import Worker\n",
     "from pricer.evaluator.service import PricerService\nfrom pricer.evaluator import settings\n"),
    ("app_uses_the_facade", "app/x.py", "from pricer.evaluator.data import load_heldout\n", "from pricer.evaluator.data import MAX_DESCRIPTIONS\n"),
    ("app_uses_the_facade", "app/x.py", "import pricer.evaluator.store.jobs\n", "from pricer.evaluator.stats.metrics import METRICS\n"),
    ("app_uses_the_facade", "app/x.py", "def f(service):\n    return service._jobs.list()\n", "def f(service):\n    return service.jobs()\n"),
    ("app_uses_the_facade", "app/x.py", "def f(s):\n    return getattr(s, '_jobs')\n", "class A:\n    def f(self):\n        return self._x, A.__name__\n"),
    ("threads_only_in_service", "evaluator/evaluate.py", "import threading\nt = threading.Thread(target=print)\n",
     "import threading\nlock = threading.Lock()\n"),
    ("threads_only_in_service", "app/x.py", "from threading import Thread as T\nclass W(T):\n    pass\n", "from threading import Event\n"),
]


@pytest.mark.parametrize(("rule", "path", "bad", "good"), SYNTHETIC)
def test_rule_catches_a_violation(rule, path, bad, good):
    assert check(rule, path, bad), f"{rule} missed a violation in {path}:\n{bad}"
    assert not check(rule, path, good), f"{rule} flagged a permitted {path}:\n{good}"


def test_rules_cover_the_synthetic_cases():
    assert {rule for rule, *_ in SYNTHETIC} == set(RULES)
