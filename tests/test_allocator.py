"""allocator.keep_freed_memory: activations freed and allocated again are reused, not faulted in."""

import os
import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys
import torch
torch.set_num_threads(1)  # one arena: the main thread allocates everything
from melanoma.allocator import keep_freed_memory
if sys.argv[1] == "on":
    assert keep_freed_memory()
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1))
x = torch.rand(32, 3, 64, 64)
with torch.inference_mode():
    for _ in range(3):  # warm-up: the first batches fault their memory in either way
        net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(40):  # batch after batch, as dedup's embedding and training run
        net(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    def faults(mode: str) -> int:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        if mode == "off":  # glibc's default threshold (128 KiB), held there: its adaptive version
            env["MALLOC_MMAP_THRESHOLD_"] = "131072"  # catches some batches, so how many varies
        out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True,
                             env=env)  # fmt: skip
        return int(out.stdout.strip())

    # Each activation is 16 MiB: at glibc's default threshold every batch maps them afresh and
    # faults their pages in; kept, none are.
    off, on = faults("off"), faults("on")
    assert off > 40 * 1024  # more than 4 MiB faulted in again every batch (measured: 14-50 MiB)
    assert on < 40 * 512  # at most a one-off growth of the heap (measured: 0 or 32 MiB once)


def test_a_users_own_setting_is_left_alone(monkeypatch):
    from melanoma.allocator import keep_freed_memory

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
