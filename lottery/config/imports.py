"""A researcher's own code named by an import path (``package.module:NAME``): a model
(``model.name``), a pruning method (``pruning.method``) or a branch (``branches``), imported
as ``python -m`` would find it, or by the name of an installed package's entry point (methods
and branches), with one :class:`ConfigError` line for every way finding it can fail."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from lottery.config.errors import ConfigError

FIX_PATH = "run from the folder holding it or add that folder to PYTHONPATH"


def split_import_path(key: str, value: str, example: str) -> tuple[str, str]:
    """``(module path, attribute)`` of ``value``; one line naming ``key`` if it is not
    ``package.module:NAME`` (``example`` is the form the fix shows)."""
    module_path, _, attribute = value.partition(":")
    if not module_path or not attribute or ":" in attribute:
        raise ConfigError(f"{key}={value!r} is not an import path; write {key}={example}")
    return module_path, attribute


@contextlib.contextmanager
def importable_from_cwd() -> Iterator[None]:
    """The current folder on ``sys.path`` (as ``python -m`` puts it) and no bytecode written,
    for the time of the import only: the user's process and folder are left as they were."""
    cwd, writes = os.getcwd(), sys.dont_write_bytecode
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    sys.dont_write_bytecode = True
    importlib.invalidate_caches()  # a file written since the process started
    try:
        yield
    finally:
        sys.dont_write_bytecode = writes
        if added:
            sys.path.remove(cwd)


def import_user_module(key: str, value: str, module_path: str) -> ModuleType:
    """``module_path`` imported from the current folder or ``sys.path``; one line naming
    ``key=value`` if it does not import or its code raises."""
    try:
        with importable_from_cwd():
            return importlib.import_module(module_path)
    except ImportError as error:
        raise ConfigError(
            f"{key}={value!r}: module {module_path!r} does not import ({error}); {FIX_PATH}"
        ) from None
    except Exception as error:  # a syntax error or an exception raised by the module's code
        raise ConfigError(
            f"{key}={value!r}: importing {module_path!r} raised {one_line_reason(error)}; fix "
            "the module"
        ) from None


def one_line_reason(error: BaseException) -> str:
    """``Type: message`` of ``error`` on one line (at most 200 characters of message)."""
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def find_user_object(key: str, value: str, group: str, kind: str, example: str) -> Any | None:
    """What ``key=value`` names: the attribute of an import path ``package.module:NAME`` (a
    ``value`` with ``:``), or else the entry point named ``value`` in ``group``; None if no
    installed package declares one. ``kind`` is what the attribute should be (``Strategy``),
    for the fix of a missing one; ``example`` is the import path's form the fix shows."""
    if ":" in value:
        return imported_attribute(key, value, kind, example)
    return entry_point_object(key, value, group)


def imported_attribute(key: str, value: str, kind: str, example: str) -> Any:
    """The attribute ``NAME`` of ``package.module:NAME``; one line naming ``key=value`` if the
    path is malformed, the module does not import, or has no such attribute."""
    module_path, attribute = split_import_path(key, value, example)
    module = import_user_module(key, value, module_path)
    if not hasattr(module, attribute):
        raise ConfigError(
            f"{key}={value!r}: module {module_path!r} has no attribute {attribute!r}; name its "
            f"{kind}"
        )
    return getattr(module, attribute)


def entry_point_object(key: str, value: str, group: str) -> Any | None:
    """The object the entry point ``value`` of ``group`` loads, or None if there is none; one
    line if it is declared but does not load."""
    for point in entry_points(group=group):
        if point.name == value:
            try:
                return point.load()
            except Exception as error:
                raise ConfigError(
                    f"{key}={value!r}: its entry point {point.value!r} does not load "
                    f"({type(error).__name__}: {error}); fix or reinstall its package"
                ) from None
    return None


def require_instance(key: str, value: str, found: Any, kind: type, fix: str) -> None:
    """One line if ``found`` (what ``key=value`` names) is not a ``kind``; the line names it
    as the user imports it (``lottery.pruning.Strategy``: ``kind`` from its package)."""
    if not isinstance(found, kind):
        package = kind.__module__.rpartition(".")[0]
        raise ConfigError(
            f"{key}={value!r} is a {type(found).__name__}, not a {package}.{kind.__name__}; "
            f"{fix}"
        )
