"""How many examples a Hypothesis property test draws.

Each property test names its own count; `COR_BRIDGE_EXAMPLES_SCALE` (a fraction, default 1)
scales them all. `make test` runs the full counts; `make test-fast` a tenth, for the
edit-test loop: same properties, same assertions, fewer draws.
"""

from __future__ import annotations

import os

SCALE = float(os.environ.get("COR_BRIDGE_EXAMPLES_SCALE", "1"))


def examples(count: int) -> int:
    """`count` scaled, and never fewer than 5."""
    return max(5, round(count * SCALE))
