"""The one timing helper: medians with torch.utils.benchmark, peak memory in a subprocess."""

import json
import os
import subprocess
import sys
import time

import torch
import torch.utils.benchmark as benchmark

HERE = os.path.dirname(os.path.abspath(__file__))


def _whole(fn):
    """``fn`` that, with a GPU present, ends by waiting for the queued device work, so
    it is timed whole."""

    def run():
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    return run


def _timer(fn):
    """A Timer of ``_whole(fn)`` on every thread torch uses (Timer's own default is one)."""
    return benchmark.Timer(
        stmt="fn()", globals={"fn": _whole(fn)}, num_threads=torch.get_num_threads()
    )


def median_seconds(fn, min_run_time=1.0):
    """Median wall time of ``fn()`` over blocked runs of at least ``min_run_time`` s."""
    return _timer(fn).blocked_autorange(min_run_time=min_run_time).median


def once_seconds(fn, warmups=2):
    """Wall time of one call of ``fn()``, for runs too slow to repeat, after ``warmups``
    untimed calls (two by default, as torch's ``Timer.timeit`` makes)."""
    for _ in range(warmups):
        _whole(fn)()
    return sample_seconds(fn, min_seconds=0)


def sample_seconds(fn, min_seconds=1.0):
    """Mean wall time of one call of ``fn()`` over as many calls, no warm-up, as fill
    ``min_seconds`` (at least one): one call of a slow function, several of a fast one,
    whose single calls vary more than the differences being read."""
    run = _whole(fn)
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def _status_bytes(field):
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in bytes.

    VmHWM, the peak RSS, starts afresh at exec; ru_maxrss would not: it keeps the
    parent's peak from before the fork, which makes every child look as big as it.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss():
    """Start VmHWM afresh at the current RSS (Linux's clear_refs), so the peak read after
    a call is that call's, not the model's setup's or the shape probe's before it."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_memory_bytes(script, *args, mmap_threshold=None):
    """Peak resident memory one call adds (``peak_memory_and_seconds``'s first value)."""
    return peak_memory_and_seconds(script, *args, mmap_threshold=mmap_threshold)[0]


def peak_memory_and_seconds(script, *args, mmap_threshold=None):
    """Peak resident memory one call adds, measured in a fresh ``python script`` process,
    and the seconds that call took.

    The script is run as ``python script --peak-of ARGS``; it must build its inputs,
    call ``report_peak(fn)`` with the zero-argument method to measure, and exit. What it
    runs before (a shape probe, a warm-up call) is not counted: the peak is reset first.
    ``mmap_threshold`` (bytes) fixes glibc's: blocks that large are mapped and unmapped
    on free, so the figure is the memory held at the peak, not what malloc kept from
    earlier frees (glibc raises its threshold as it goes, then keeps freed blocks).
    """
    result = subprocess.run(
        [sys.executable, script, "--peak-of", *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE,
        env=os.environ
        if mmap_threshold is None
        else {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(mmap_threshold)},
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["peak_bytes"], report["seconds"]


def synchronize(device):
    """Wait for queued work on ``device`` (a no-op on the CPU), so timings are whole."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def report_peak(fn, device="cpu"):
    """Run ``fn()`` once and print the peak memory it added: RSS above the process's
    current RSS on the CPU, allocated CUDA memory above the current on a GPU."""
    if str(device).startswith("cuda"):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        _reset_peak_rss()
        before = _status_bytes("VmRSS")
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        peak = _status_bytes("VmHWM") - before
    print(json.dumps({"peak_bytes": max(peak, 0), "seconds": seconds}))
