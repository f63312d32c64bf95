"""Test-only switches that bring back known past defects, so the chaos campaign can show it finds them.

Issue 13's self-test (`make bench`, tests/e2e/test_chaos.py) sets RECONCILER_TEST_DEFECT to a name below
and requires the seeded campaign to report the violation, its seed and a shrunk schedule. Nothing
else may set it: with the variable unset (always, in production) every switch is off. Names:

- `claim-forgets-old-run`: a claim clears the previous run's process group in the commit that hands
  the job over (issue 11 item 1), so a claimer killed while it ends that run leaves no record of it;
- `unsettled-read`: every desired file counts at once, half-written or not (issue 11 item 2);
- `policy-ignored`: the daemon's passes plan without the policy in force (issue 15), so a quota holds
  nothing back;
- `suspension-ignored`: the store reads no suspension and claims held jobs (issue 16 item 1), so
  plans and workers act on a suspended resource;
- `rollout-no-bake`: a rollout's next wave starts as soon as the previous one's jobs ended, without
  its bake (issue 17).
"""

from __future__ import annotations

import os

ENV = "RECONCILER_TEST_DEFECT"


def defect_enabled(name: str) -> bool:
    """Whether the test-only defect `name` is switched on (comma-separated names in RECONCILER_TEST_DEFECT)."""
    return name in os.environ.get(ENV, "").split(",")
