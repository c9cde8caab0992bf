"""The one timing helper: medians with torch.utils.benchmark, peak memory in a subprocess."""

import json
import os
import resource
import subprocess
import sys

import torch.utils.benchmark as benchmark

HERE = os.path.dirname(os.path.abspath(__file__))


def median_seconds(fn, min_run_time=1.0):
    """Median wall time of ``fn()`` over blocked runs of at least ``min_run_time`` s."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn})
    return timer.blocked_autorange(min_run_time=min_run_time).median


def once_seconds(fn):
    """Wall time of one call of ``fn()``, for runs too slow to repeat."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn})
    return timer.timeit(1).median


def _rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_bytes(script, *args):
    """Peak resident memory one call adds, measured in a fresh ``python script`` process.

    The script is run as ``python script --peak-of ARGS``; it must build its inputs,
    call ``report_peak(fn)`` with the zero-argument method to measure, and exit.
    """
    result = subprocess.run([sys.executable, script, "--peak-of", *map(str, args)],
                            capture_output=True, text=True, check=True, cwd=HERE)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"]


def report_peak(fn):
    """Run ``fn()`` once and print the peak RSS it added above the process's current RSS."""
    before = _rss_bytes()
    fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_bytes": max(peak - before, 0)}))
