"""Transparent huge pages for the command line's large, short-lived buffers on a CPU.

XLA's CPU convolutions (Eigen) allocate their packing buffers with ``malloc`` on every call:
75 MB for a ResNet-20 first-stage layer at batch 128. Above 32 MB glibc always serves a
request with a fresh ``mmap`` and returns it with ``munmap``, so every call faults in, and
the kernel zeroes, each 4 KB page again: 84,000 page faults and about 260 ms of kernel time
per ResNet-20 train step on a 2-core CPU (a quarter of the step's CPU time;
``benchmarks/conv_cpu.py`` prints the faults per step). glibc's tunable
``glibc.malloc.hugetlb=1`` asks for transparent huge pages on such mappings (2 MB pages,
where the kernel's setting is ``madvise``, the usual default): 600 faults per step, and the
step 15% faster (median of five back-to-back pairs of processes; 0-32%). It changes where
memory comes from, not what is computed: results are bit-identical.

glibc reads ``GLIBC_TUNABLES`` once, when the process starts; no call can set it later.
So :func:`restart_with_huge_pages` starts the command again, once, with the tunable set:
the ``lottery`` command and ``python -m lottery`` call it first (an interpreter start, about
0.05 s). Code that imports ``lottery`` in a process of its own (a notebook, a script) can
start that process with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` for the same speed.

Nothing is changed where it would not help or where the user has chosen: not outside
Linux with glibc 2.35 or later (the first with the tunable), not where the kernel's huge
pages are ``always`` (already huge) or ``never``, not if ``GLIBC_TUNABLES`` already sets
``glibc.malloc.hugetlb``, and not with ``LOTTERY_HUGE_PAGES=0`` (or ``false``, ``no``,
``off``; another value than those and ``1``, ``true``, ``yes``, ``on`` stops the command
with one line).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
HUGE_PAGES = f"{TUNABLE}=1"
OPT_OUT = "LOTTERY_HUGE_PAGES"
KERNEL_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
FIRST_GLIBC = (2, 35)
OFF = ("0", "false", "no", "off")
ON = ("1", "true", "yes", "on")


def opted_out(environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether ``LOTTERY_HUGE_PAGES`` turns the huge pages off (unset or empty: on).

    Raises ValueError, with the line to show, for a value that is neither on nor off.
    """
    value = environ.get(OPT_OUT, "").strip().lower()
    if value in OFF:
        return True
    if value in ("", *ON):
        return False
    raise ValueError(
        f"{OPT_OUT}={environ[OPT_OUT]!r} is not a switch: set it to 0 (no huge pages for "
        "malloc) or 1 (the default), or unset it"
    )


def glibc_version() -> tuple[int, int] | None:
    """The running C library's glibc version, None if it is not glibc."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):  # not glibc, or not POSIX
        return None
    major, minor = version.split(".")[:2]
    return (int(major), int(minor)) if name == "glibc" else None


def kernel_mode(setting: Path = KERNEL_SETTING) -> str | None:
    """The kernel's transparent huge page mode (``always``, ``madvise`` or ``never``)."""
    try:
        text = setting.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def environment_with_huge_pages(
    environ: dict[str, str] | os._Environ[str],
    glibc: tuple[int, int] | None,
    mode: str | None,
) -> dict[str, str] | None:
    """``environ`` with the tunable added, or None where it would not help or where the
    user has decided (see the module's docstring); ValueError for a bad opt-out value."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if (
        opted_out(environ)
        or glibc is None
        or glibc < FIRST_GLIBC
        or mode != "madvise"
        or TUNABLE in tunables
    ):
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, HUGE_PAGES]))}


def environment_here(environ: dict[str, str] | os._Environ[str]) -> dict[str, str] | None:
    """:func:`environment_with_huge_pages` for this machine's glibc and kernel setting."""
    return environment_with_huge_pages(environ, glibc_version(), kernel_mode())


def restart_with_huge_pages() -> None:
    """Start this command again (same interpreter, flags and arguments, same process id)
    with huge pages for ``malloc``, where that helps; return if it does not apply or the
    restart fails. A bad ``LOTTERY_HUGE_PAGES`` exits with status 2 and one line."""
    try:
        environ = environment_here(os.environ)
    except ValueError as error:
        # The console's one-line form (lottery.logging.console.error_line), written here:
        # the kernels' package sits below the console and imports nothing above it.
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    if environ is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, environ)
    except OSError:
        return
