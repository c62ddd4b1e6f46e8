"""What allocator.keep_freed_memory saves: dedup's CPU embedding of 1,280 synthetic images, with
glibc's default thresholds and with the raised ones, each in a fresh process, twice; wall time,
user and system CPU time and minor page faults.

    python benchmarks/allocator_faults.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import resource, sys, time
from melanoma.allocator import keep_freed_memory
from melanoma.data.dedup import embed
from melanoma.data.ingest import ingest
if sys.argv[2] == "on":
    assert keep_freed_memory()
table = ingest(sys.argv[1], verify="none", progress=False).head(1280)
before, start = resource.getrusage(resource.RUSAGE_SELF), time.time()
embed(table, size=64, progress=False)
after = resource.getrusage(resource.RUSAGE_SELF)
print(f"{sys.argv[2]:>3}: {time.time() - start:.1f} s wall, user {after.ru_utime - before.ru_utime:.1f} s, "
      f"system {after.ru_stime - before.ru_stime:.1f} s, {after.ru_minflt - before.ru_minflt:,} minor page faults")
"""


def main() -> None:
    from melanoma.synthetic.generate import SynthConfig, generate

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, SynthConfig(n_train_2020=1000, n_test_2020=100, n_2019=300), progress=False)
        for mode in ("off", "on", "off", "on"):
            subprocess.run([sys.executable, "-c", RUN, str(data), mode], check=True)


if __name__ == "__main__":
    main()
