"""Checks the wheel ``make wheel`` built before anyone installs it: it is the abi3 wheel
for the platform tag asked for, auditwheel confirms that tag, and the extension asks the
C library only for what the tag promises.

auditwheel reads the glibc versions the extension's symbols carry. A symbol that carries
none escapes it: zig links a call to a function the chosen glibc lacks as a bare
undefined name (``memfd_create`` arrived in glibc 2.27, so a manylinux2014 build of the
engine has one), auditwheel passes the wheel, and ``import shoal`` then fails on the older
glibc with "undefined symbol". So every strong undefined symbol of the extension must
carry a glibc version, except the interpreter's C API (``Py*``, ``_Py*``), which the
process that loads the extension provides.

Run with the wheel tools' interpreter (``target/wheel-tools``: auditwheel and the ELF
reader it brings), as ``make wheel`` does::

    python tests/wheel_check.py target/dist/shoal-*.whl manylinux_2_28
"""

from __future__ import annotations

import io
import platform
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

PYTHON_TAG = "cp311"


def version(name: str) -> tuple[int, ...]:
    """``GLIBC_2.3.4`` as (2, 3, 4)."""
    return tuple(int(part) for part in name.removeprefix("GLIBC_").split("."))


@dataclass
class Needs:
    """What one shared object asks of the C library."""

    strong: dict[str, str] = field(default_factory=dict)  # symbol -> GLIBC_x.y
    weak: dict[str, str] = field(default_factory=dict)  # may be absent, but the version not
    unversioned: list[str] = field(default_factory=list)  # strong, no version, not the C API

    def highest(self, symbols: dict[str, str]) -> str:
        """The newest glibc version among ``symbols`` and the symbols that need it."""
        if not symbols:
            return "none"
        top = max(symbols.values(), key=version)
        return f"{top} ({', '.join(sorted(s for s, v in symbols.items() if v == top))})"


def needs(shared_object: bytes) -> Needs:
    """The undefined dynamic symbols of an ELF shared object, by the glibc version each
    carries (from its .gnu.version entry and the .gnu.version_r names)."""
    elf = ELFFile(io.BytesIO(shared_object))
    dynsym = elf.get_section_by_name(".dynsym")
    versym = elf.get_section_by_name(".gnu.version")
    verneed = elf.get_section_by_name(".gnu.version_r")
    names: dict[int, str] = {}
    if verneed is not None:
        for _library, entries in verneed.iter_versions():
            for entry in entries:
                names[int(entry["vna_other"])] = str(entry.name)
    found = Needs()
    for index, symbol in enumerate(dynsym.iter_symbols()):
        if symbol["st_shndx"] != "SHN_UNDEF" or not symbol.name:
            continue
        name = str(symbol.name)
        weak = symbol["st_info"]["bind"] == "STB_WEAK"
        tag = versym.get_symbol(index)["ndx"] if versym is not None else "VER_NDX_GLOBAL"
        glibc = names.get(tag) if isinstance(tag, int) else None
        if glibc is not None and glibc.startswith("GLIBC_"):
            (found.weak if weak else found.strong)[name] = glibc
        elif not weak and not name.startswith(("Py", "_Py")):
            found.unversioned.append(name)
    return found


def auditwheel_tag(wheel: Path) -> str:
    """The platform tag ``auditwheel show`` says the wheel is consistent with."""
    shown = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    said = re.search(
        r'is consistent with the following platform tag: "([^"]+)"', " ".join(shown.split())
    )
    if said is None:
        raise SystemExit(f"auditwheel show named no platform tag:\n{shown}")
    return said.group(1)


def check(wheel: Path, policy: str) -> list[str]:
    """What is wrong with ``wheel`` for ``policy`` (e.g. manylinux_2_28); prints what
    each extension in it needs."""
    expected = f"{policy}_{platform.machine()}"
    problems = []
    _name, _version, python, abi, platforms = wheel.name.removesuffix(".whl").split("-")
    if (python, abi) != (PYTHON_TAG, "abi3") or expected not in platforms.split("."):
        problems.append(f"the wheel is tagged {python}-{abi}-{platforms}, not {expected}")
    confirmed = auditwheel_tag(wheel)
    if confirmed != expected:
        problems.append(f"auditwheel show confirms {confirmed}, not {expected}")
    ceiling = version("GLIBC_" + policy.removeprefix("manylinux_").replace("_", "."))
    with zipfile.ZipFile(wheel) as archive:
        extensions = [n for n in archive.namelist() if n.endswith(".so")]
        if not extensions:
            problems.append("the wheel holds no extension")
        for member in extensions:
            found = needs(archive.read(member))
            print(
                f"{member}: the newest glibc versions it names: {found.highest(found.strong)}"
                f" strongly, {found.highest(found.weak)} weakly"
            )
            if found.unversioned:
                problems.append(
                    f"{member} takes {', '.join(sorted(found.unversioned))} from the C "
                    "library with no version: the glibc of the tag may lack it"
                )
            beyond = sorted(
                s for s, v in {**found.strong, **found.weak}.items() if version(v) > ceiling
            )
            if beyond:
                problems.append(f"{member} needs a newer glibc than {policy} for {beyond}")
    if not problems:
        print(f"{wheel.name}: {expected}, as auditwheel show confirms")
    return problems


def main(arguments: list[str]) -> int:
    wheel, policy = Path(arguments[0]), arguments[1]
    problems = check(wheel, policy)
    for problem in problems:
        print(f"{wheel.name}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
