"""End to end on the embedded defaults: keep evidence, export it, verify it as an auditor would.

Run it from the repository root once ``.venv`` exists (``scripts/demo``, ``scripts/test`` or
``scripts/bootstrap`` make it): ``.venv/bin/python examples/quickstart.py [FOLDER]``. It works in
FOLDER, by default ``./demo/quickstart``: beside the demo service's own profile and ledger in
``./demo``, not in them, so it can run while the demo serves.

1. ``init_project`` (what ``aiobligations init`` does) writes a profile and development keys, once;
2. three AI interactions with personal data, and the service's log line before each (through
   ``LedgerHandler``), go into the ledger;
3. one person asks to be forgotten (``Obligations.erase_subject``): their key is shredded, their
   records stay in the log and provable;
4. ``aiobligations export`` writes an audit bundle, and ``aiobligations verify`` checks it offline
   with nothing but the ledger's public verifier key.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from aiobligations import Obligations
from aiobligations.adapters import LedgerHandler
from aiobligations.interaction import interaction_scope, uuid7
from aiobligations.keys import init_project


def main(folder: Path) -> int:
    config = folder / "aiobligations.toml"
    if not config.exists():
        folder.mkdir(parents=True, exist_ok=True)
        init_project(folder)
        print(f"1. wrote {config} and development keys in {folder / 'keys'}")
    else:
        print(f"1. using {config}")

    with Obligations.from_file(config) as obligations:
        ledger = obligations.ledger
        log = logging.getLogger("demo.service")
        log.setLevel(logging.INFO)
        log.addHandler(LedgerHandler(ledger))

        for subject, prompt in [("alice", "你好"), ("bob", "Summarise my contract"), ("alice", "Thanks")]:
            interaction_id = str(uuid7())
            with interaction_scope(interaction_id):
                log.info("model call started")
                index = ledger.append(
                    {
                        "kind": "interaction",
                        "interaction_id": interaction_id,
                        "route": "/v1/chat/completions",
                        "model": "toy-1",
                        "disclosure": "header",
                        "subject": subject,
                        "personal": {"prompt": prompt, "output": f"[AI] echo: {prompt}"},
                    }
                )
            print(f"2. interaction {interaction_id} for {subject} is record {index}")

        erased_at = obligations.erase_subject("bob")
        print(f"3. bob erased (record {erased_at}); his records can no longer be opened")
        size = ledger.flush()
        print(f"   the ledger holds {size} records")

    bundle = folder / "audit-bundle.tar.gz"
    bundle.unlink(missing_ok=True)
    cli = [sys.executable, "-m", "aiobligations.cli"]
    subprocess.run([*cli, "export", "--config", str(config), "--out", str(bundle)], check=True)
    key = subprocess.run(
        [*cli, "verify", "--config", str(config), "--json", str(folder / "ledger.db")],
        check=True, capture_output=True, text=True,
    )
    vkey = json.loads(key.stdout)["key"]
    print(f"4. an auditor, given only {vkey}, verifies the bundle:")
    result = subprocess.run([*cli, "verify", "--key", vkey, str(bundle)])
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo") / "quickstart"))
