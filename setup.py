"""Package discovery for the three source folders (metadata lives in pyproject.toml).

`plugins/` and `tasks/` are importable as `cotkit_plugins` and `cotkit_tasks`. setuptools'
automatic discovery only sees folder names, so the mapped packages are listed here; the wheel
test in tests/test_packaging.py catches anything left out.
"""

from setuptools import find_packages, setup


def _mapped(folder: str, package: str) -> list[str]:
    return [package] + [f"{package}.{sub}" for sub in find_packages(folder)]


setup(
    packages=find_packages(include=["cotkit", "cotkit.*"])
    + _mapped("plugins", "cotkit_plugins")
    + _mapped("tasks", "cotkit_tasks"),
)
