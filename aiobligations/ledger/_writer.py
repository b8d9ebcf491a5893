"""Entry point of the ledger's writer process: ``python -m aiobligations.ledger._writer FD``.

A module of its own, so that ``-m`` runs it fresh instead of re-running
:mod:`aiobligations.ledger.process`, which the package has already imported.
"""

import sys

from aiobligations.ledger.process import _serve

if __name__ == "__main__":
    sys.exit(_serve(int(sys.argv[1])))
