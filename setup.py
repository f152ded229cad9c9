"""Package discovery for the `modelport.*` layout (metadata lives in pyproject.toml).

The top-level folders map under the single `modelport` root (`base` -> `modelport.base`,
`runtimes/<fw>` -> `modelport.runtimes.<fw>`), which setuptools' own `packages.find` cannot
express: it names packages after their folders. Every folder holding Python modules under
base/, storage/ and runtimes/ is a package, so a new runtime (or base subpackage) needs no
list kept here; nothing generic (`base`, `storage`) is ever installed at the top level.
"""

from pathlib import Path

from setuptools import setup

ROOTS = ("base", "storage", "runtimes")


def modelport_packages() -> list[str]:
    here = Path(__file__).resolve().parent
    folders = {
        module.parent.relative_to(here) for root in ROOTS for module in (here / root).rglob("*.py")
    }
    return sorted(
        "modelport." + ".".join(folder.parts)
        for folder in folders
        if not any(part.startswith((".", "__")) for part in folder.parts)
    )


setup(packages=modelport_packages())
