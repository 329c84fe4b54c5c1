"""A researcher's own code named by an import path (``package.module:NAME``): a model
(``model.name``) or a pruning method (``pruning.method``), imported as ``python -m`` would
find it, with one :class:`ConfigError` line for every way the import can fail."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

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
