"""Entry point of the ledger's writer process: ``python -m aiobligations.ledger._writer FD``.

A module of its own, so that ``-m`` runs it fresh instead of re-running
:mod:`aiobligations.ledger.daemon`, which the package has already imported.

The writer ignores SIGINT and SIGTERM: a Ctrl-C in a terminal, or a service manager stopping the
whole process group, reaches it together with the service, and the service decides when its
ledger closes. The writer exits when the last process using the ledger has left (or died).
"""

import signal
import sys

from aiobligations.ledger.daemon import serve

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(serve(int(sys.argv[1])))
