"""What the test scripts share: a report every assertion goes through, and
its summary (counts per check, failures, exit status 1 on any failure)."""

import collections
import sys


class Report:
    """Failures and counts: every check goes through `check`."""

    def __init__(self):
        self.failures = []
        self.counts = collections.Counter()

    def check(self, ok, what, detail=""):
        self.counts[what] += 1
        if not ok:
            self.failures.append(f"{what}: {detail}" if detail else what)
        return ok

    def finish(self, name, passed_suffix=""):
        """Prints the counts and failures; exits 1 if any check failed."""
        for what, n in sorted(self.counts.items()):
            print(f"  {n:5d}  {what}")
        if self.failures:
            print(f"\n{name}: {len(self.failures)} FAILED:")
            for f in self.failures:
                print(f"  - {f}")
            sys.exit(1)
        print(f"{name}: all {sum(self.counts.values())} checks passed{passed_suffix}")
