"""The `secagg` command installed with the Python package (``pip install ./secagg-py``): the same
CLI as ``cargo install --path secagg-cli``, compiled into the extension and run in this process.

Its own `secagg` processes (the parties of ``secagg demo``) are started through this script too:
``SECAGG_EXE`` names it, since this process's executable is the Python interpreter.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from . import _native

    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if script and os.path.isfile(script):
        os.environ.setdefault("SECAGG_EXE", script)
    argv = ["secagg", *sys.argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(_native.cli_main(argv))


if __name__ == "__main__":
    main()
