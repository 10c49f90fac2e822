"""``python -m secagg.fedbiomed MODULE ARGS…``: runs a Fed-BioMed entry point after
:func:`secagg.fedbiomed.install` (see its ``_main``)."""

import sys

from secagg.fedbiomed import _main

sys.exit(_main(sys.argv[1:]))
