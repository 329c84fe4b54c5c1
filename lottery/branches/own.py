"""A branch of your own, found without editing the package.

``branches=[package.module:NAME]`` imports ``NAME`` from ``package.module`` as
``pruning.method=package.module:NAME`` does a method (:mod:`lottery.config.imports`); an
installed package can instead declare an entry point in the group ``lottery.branches``, whose
name is then listed like a built-in branch's::

    [project.entry-points."lottery.branches"]
    fan_in_shuffle = "mypackage.mybranch:BRANCH"

``NAME`` is a :class:`lottery.branches.Branch`. Its arguments, a dataclass it declares as
``Branch.arguments``, are set as ``branch.own.<its name>.<key>``; the branch's functions get
them typed (an instance), checked here with one line for a key it does not have or a value
of the wrong type.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lottery.branches.base import Branch, BranchInputs, BranchRun
from lottery.config import ConfigError, RunError
from lottery.config.imports import find_user_object, one_line_reason, require_instance

ENTRY_POINTS = "lottery.branches"
# A branch's name is a config key (branch.own.<name>); a run's label, a folder name part.
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def own_branch(entry: str, taken: set[str]) -> Branch | None:
    """The user's branch that ``entry`` of ``branches`` names (an import path or an entry
    point), its functions given typed arguments; None if it names none. ``taken`` are the
    names it may not have (the built-in branches')."""
    found = find_user_object(
        "branches", entry, ENTRY_POINTS, "Branch", "[...,package.module:NAME]"
    )
    if found is None:
        return None
    require_instance("branches", entry, found, Branch, "name the module's Branch")
    _check_declaration(entry, found, taken)
    return dataclasses.replace(
        found,
        runs=lambda inputs, raw: _labelled_runs(found, inputs, own_arguments(found, raw)),
        check=lambda raw, timeline: found.check(own_arguments(found, raw), timeline),
        check_network=lambda raw, cfg, batch_stats: found.check_network(
            own_arguments(found, raw), cfg, batch_stats
        ),
    )


def _check_declaration(entry: str, branch: Branch, taken: set[str]) -> None:
    if not isinstance(branch.name, str) or not _NAME_RE.fullmatch(branch.name):
        raise ConfigError(
            f"branches={entry!r} is named {branch.name!r}; give its Branch a name of letters, "
            "digits and '_' (it is the key of its arguments, branch.own.<name>)"
        )
    if branch.name in taken:
        raise ConfigError(
            f"branches={entry!r} is named {branch.name!r}, as a built-in branch; give its "
            "Branch a name of its own"
        )
    arguments = branch.arguments
    if arguments is None:
        return
    if not (isinstance(arguments, type) and dataclasses.is_dataclass(arguments)):
        raise ConfigError(
            f"branches={entry!r}: its arguments are a {type(arguments).__name__}, not a "
            "dataclass; declare Branch(..., arguments=<a dataclass>) or None"
        )
    required = [f.name for f in dataclasses.fields(arguments) if _has_no_default(f)]
    if required:
        raise ConfigError(
            f"branches={entry!r}: its arguments {arguments.__name__} have no default for "
            f"{', '.join(required)}; give every field a default"
        )
    try:
        OmegaConf.structured(arguments)
    except OmegaConfBaseException as error:
        raise ConfigError(
            f"branches={entry!r}: its arguments {arguments.__name__} cannot be read from the "
            f"config ({one_line_reason(error)}); use int, float, bool, str, lists and "
            "dataclasses of them"
        ) from None


def _has_no_default(item: dataclasses.Field) -> bool:
    return item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING


def own_arguments(branch: Branch, raw: Any) -> Any:
    """``branch.own.<name>`` (``raw``, a dict) as an instance of ``branch.arguments``; one
    line for a key it does not have or a value of the wrong type."""
    name, arguments = branch.name, branch.arguments
    if arguments is None:
        if raw:
            raise ConfigError(
                f"branch.own.{name} is set but branch {name!r} takes no arguments; remove it"
            )
        return None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"branch.own.{name}={raw!r} is not a set of arguments; set each one, e.g. "
            f"+branch.own.{name}.<key>=VALUE ({describe(arguments)})"
        )
    fields = {item.name for item in dataclasses.fields(arguments)}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(
                f"branch.own.{name}.{key} is not an argument of branch {name!r}; its "
                f"arguments are {describe(arguments)}"
            )
        try:
            OmegaConf.merge(OmegaConf.structured(arguments), {key: value})
        except OmegaConfBaseException:
            raise ConfigError(
                f"branch.own.{name}.{key}={value!r} is not of the argument's type; branch "
                f"{name!r} takes {describe(arguments)}"
            ) from None
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(arguments), raw))


def describe(arguments: type) -> str:
    """``seed: int = 0, scale: float = 1.0``: the fields of an arguments dataclass."""
    return ", ".join(
        f"{item.name}: {_type_name(item.type)} = {_default(item)!r}"
        for item in dataclasses.fields(arguments)
    )


def _type_name(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else getattr(
        annotation, "__name__", str(annotation)
    )


def _default(item: dataclasses.Field) -> Any:
    return item.default if item.default is not dataclasses.MISSING else item.default_factory()


def _labelled_runs(branch: Branch, inputs: BranchInputs, arguments: Any) -> list[BranchRun]:
    """The branch's runs; one RunError line if one's label cannot name its series and
    folder."""
    runs = branch.runs(inputs, arguments)
    for run in runs:
        if not isinstance(run, BranchRun):
            raise RunError(
                f"branch {branch.name!r} returned a {type(run).__name__}, not a "
                "lottery.branches.BranchRun; return a list of them"
            )
        if not isinstance(run.label, str) or not _LABEL_RE.fullmatch(run.label):
            raise RunError(
                f"branch {branch.name!r} returned a run labelled {run.label!r}; label it with "
                "letters, digits, '.', '_', '+', '-' (it names the series and the folder)"
            )
        if run.label == "imp":  # lottery.store's MAIN_BRANCH
            raise RunError(
                f"branch {branch.name!r} returned a run labelled 'imp', the main line's "
                "series; label it with a name of its own"
            )
    return runs
