"""Load a submission's files by location, isolated from every other copy of the project.

Two rules keep the reference, this repository and the submission apart:

- a graded file is executed from the submission under a unique module name
  (``submission_<hash>__utils__TripletLoss``), never taken from ``sys.modules``;
- the submission's own imports (``from utils.io import ...``, ``from exercise1.q4_resnet import ...``)
  resolve through :class:`SubmissionFinder`, which maps the project's top-level names to the
  submission's root, and refuses them (instead of falling back to another copy) when the submission
  lacks them.

The autograder itself never imports project code: it only reads it through this module.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

# Top-level names that belong to the grader (tests/ is on sys.path while pytest runs), never the submission.
GRADER_NAMES = frozenset({"tests", "conftest", "autograder", "reference", "graded", "setup"})


class SubmissionError(Exception):
    """A submission file is missing, does not import, or lacks a graded name; the message is for the student."""


def project_module_names(root: Path) -> set[str]:
    """Top-level module and package names of the project at ``root`` (``utils``, ``data``, ``main``, ...)."""
    names = set()
    if not root.is_dir():
        return names
    for entry in root.iterdir():
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix == ".py":
            names.add(entry.stem)
        elif entry.is_dir() and entry.name.isidentifier() and any(entry.glob("*.py")):
            names.add(entry.name)
    return names - GRADER_NAMES


class SubmissionFinder(importlib.abc.MetaPathFinder):
    """Resolve the project's top-level names from the submission root, and only from there.

    ``claimed`` holds every project name of the submission and of the grading repository: a name the
    submission lacks must fail to import rather than silently load the grader's copy.
    """

    def __init__(self, root: Path, claimed: set[str]):
        self.root = root
        self.claimed = frozenset(claimed)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if "." in fullname or fullname not in self.claimed:
            return None  # submodules follow their parent package's __path__, which lies in the submission
        spec = importlib.machinery.PathFinder.find_spec(fullname, [str(self.root)])
        if spec is None:
            raise ModuleNotFoundError(f"No module named {fullname!r} in the submission {self.root}", name=fullname)
        return spec


def is_under(path: str | Path, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(root)
        return True
    except (ValueError, OSError):
        return False


def install_finder(root: Path, grader_root: Path) -> SubmissionFinder:
    """Route the project's imports to ``root`` for this process, dropping copies imported from elsewhere."""
    claimed = project_module_names(root) | project_module_names(grader_root)
    for name in list(sys.modules):
        module = sys.modules[name]
        if name.partition(".")[0] in claimed:
            origin = getattr(module, "__file__", None)
            if origin is None or not is_under(origin, root):
                del sys.modules[name]
    finder = SubmissionFinder(root, claimed)
    sys.meta_path.insert(0, finder)
    if str(root) not in sys.path:
        # At the end: the finder already resolves the project's names; the grader's own packages stay first.
        sys.path.append(str(root))
    return finder


def uninstall_finder(finder: SubmissionFinder) -> None:
    if finder in sys.meta_path:
        sys.meta_path.remove(finder)


class Submission:
    """The repository being graded. ``load("utils/TripletLoss.py")`` executes that file from it."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.tag = hashlib.sha1(str(self.root).encode()).hexdigest()[:8]
        self._modules: dict[str, ModuleType] = {}
        self._failures: dict[str, BaseException] = {}

    def path(self, relpath: str) -> Path:
        return self.root / relpath

    def module_name(self, relpath: str) -> str:
        return f"submission_{self.tag}__" + relpath.removesuffix(".py").replace("/", "__")

    def load(self, relpath: str) -> ModuleType:
        """Execute ``relpath`` once per session under its unique name; failures are cached and re-raised."""
        if relpath in self._modules:
            return self._modules[relpath]
        if relpath in self._failures:
            raise self._failures[relpath]
        path = self.path(relpath)
        if not path.is_file():
            raise SubmissionError(f"missing file {relpath}")
        name = self.module_name(relpath)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses, pickling and typing look modules up by name
        try:
            spec.loader.exec_module(module)
        except NotImplementedError as error:
            self._failures[relpath] = error
            sys.modules.pop(name, None)
            raise
        except (Exception, SystemExit) as error:
            failure = SubmissionError(f"{relpath} does not import: {type(error).__name__}: {_first_line(error)}")
            failure.__cause__ = error
            self._failures[relpath] = failure
            sys.modules.pop(name, None)
            raise failure from error
        except BaseException:  # a timeout while importing: later tests fail at once instead of waiting again
            self._failures[relpath] = SubmissionError(f"{relpath} does not import: it timed out while importing")
            sys.modules.pop(name, None)
            raise
        self._modules[relpath] = module
        return module

    def use_reference(self, monkeypatch: Any, relpath: str, name: str, replacement: Any) -> int:
        """Make the submission use ``replacement`` instead of its own ``name`` from ``relpath``, for one test.

        Grading one question must not depend on another question's answer: the test of ``train`` swaps
        in the reference ``Market1501``, the test of ``ReIDLoss`` the reference ``TripletLoss``. Every
        loaded module of the submission (all copies: the graded one and those its imports created) that
        holds that object, by ``from x import Name`` or as its definition, gets the replacement.
        Returns how many module globals changed.
        """
        target = self.path(relpath).resolve()
        own_tests = self.root / "tests"
        changed = 0
        for module in list(sys.modules.values()):
            origin = getattr(module, "__file__", None)
            if not origin or not is_under(origin, self.root) or is_under(origin, own_tests):
                continue
            for key, value in list(vars(module).items()):
                if getattr(value, "__name__", None) != name:
                    continue
                defining = sys.modules.get(getattr(value, "__module__", None) or "")
                defining_file = getattr(defining, "__file__", None)
                if defining_file and Path(defining_file).resolve() == target:
                    monkeypatch.setattr(module, key, replacement)
                    changed += 1
        return changed

    def get(self, relpath: str, name: str) -> Any:
        """The object ``name`` defined by ``relpath`` (a one-line error naming both when it is absent)."""
        module = self.load(relpath)
        try:
            return getattr(module, name)
        except AttributeError:
            raise SubmissionError(f"{relpath} defines no `{name}`") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"
