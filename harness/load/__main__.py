"""``python -m harness.load CONFIG.json``: the load driver, as ``python -m harness.load.driver``.

Both spellings take the same arguments (``--worker --master-host H --master-port P ...``
for a worker); docs/load-driver.md.
"""

from __future__ import annotations

import sys

from harness.load.driver import main

if __name__ == "__main__":
    sys.exit(main())
