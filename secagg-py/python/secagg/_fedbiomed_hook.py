"""``SECAGG_FEDBIOMED=1``: secagg's classes in Fed-BioMed, with no change to Fed-BioMed or to
the commands that start it (``fedbiomed_run node start``, ``python -m fedbiomed.node.cli …``).

``secagg_fedbiomed.pth`` (installed beside the package, read by ``site`` at every interpreter
start) imports this module only when ``SECAGG_FEDBIOMED`` is set to something other than ``0``.
On import it puts a finder first on ``sys.meta_path`` that lets each Fed-BioMed module defining a
replaced class load as usual and, right after it has run, puts secagg's class in its place
(:func:`secagg.fedbiomed.install` for modules that have loaded already). Every later
``from fedbiomed.common.certificate_manager import CertificateManager``, and every manager
Fed-BioMed builds at import, then gets secagg's. Nothing else is touched; a failure to install is
raised by the import of the Fed-BioMed module, never swallowed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Optional, Sequence


class _Loader(importlib.abc.Loader):
    """Runs the real loader, then replaces the module's classes."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)  # type: ignore[attr-defined]
        from . import fedbiomed

        for name, ours in fedbiomed._REPLACED.get(module.__name__, {}).items():
            if not isinstance(getattr(module, name, None), type):
                raise ImportError(
                    f"SECAGG_FEDBIOMED is set, but {module.__name__} has no class {name}: "
                    f"secagg.fedbiomed replaces Fed-BioMed v4's classes"
                )
            setattr(module, name, ours)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the modules that define the replaced classes through the other finders, and wraps
    their loaders."""

    def find_spec(
        self,
        fullname: str,
        path: Optional[Sequence[str]],
        target: Optional[ModuleType] = None,
    ) -> Optional[importlib.machinery.ModuleSpec]:
        from . import fedbiomed

        if fullname not in fedbiomed._REPLACED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def _activate() -> None:
    # Imported before the finder is in place: the finder's own imports must not reach it.
    from . import fedbiomed

    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
    if any(name in sys.modules for name in fedbiomed._REPLACED):
        fedbiomed.install()


_activate()
