"""Wall time and peak memory of `melanoma demo` from nothing (fresh cache, fresh run folder).

Run: .venv/bin/python benchmarks/demo_time.py [--isic2024]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    extra = ["--isic2024"] if "--isic2024" in sys.argv[1:] else []
    melanoma = Path(sys.executable).with_name("melanoma")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MELANOMA_CACHE": str(Path(tmp) / "cache")}
        start = time.time()
        subprocess.run([str(melanoma), "demo", *extra, "--out", str(Path(tmp) / "run")], env=env, check=True)
        seconds = time.time() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"\nmelanoma demo {' '.join(extra)} from a fresh cache: {seconds:.0f} s wall, peak resident memory {peak_mib:.0f} MiB"
    )
    print(f"({os.cpu_count()} CPU cores)")


if __name__ == "__main__":
    main()
