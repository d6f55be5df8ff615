"""Install a throwaway plugin into a directory, as pip would, for subprocess tests.

The directory gets the module and a ``.dist-info`` with the entry point and
``Requires-Dist`` lines, so ``importlib.metadata`` finds it exactly like an
installed distribution once the directory is on ``PYTHONPATH``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path


def install_plugin(
    site: Path, name: str, source: str, *, version: str = "1.0", requires: Sequence[str] = ()
) -> dict[str, str]:
    """Write plugin ``name`` (module ``NAME_plugin``) into ``site``; return its environment."""
    module = f"{name}_plugin"
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    metadata = ["Metadata-Version: 2.1", f"Name: {module}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {requirement}" for requirement in requires]
    (info / "METADATA").write_text("\n".join(metadata) + "\n")
    (info / "entry_points.txt").write_text(f"[swiftmail]\n{name} = {module}\n")
    return {"PYTHONPATH": str(site)}
