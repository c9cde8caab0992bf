"""Run mutmut's mutants by name against a chosen list of tests.

mutmut runs each mutant against every selected test that reaches the mutated function;
for a function that nearly every test reaches, a surviving mutant costs the whole
selection. This runs named mutants against the fast tests you pick instead, stopping at
the first failure, two at a time, each forked from one process that has already
imported torch and the mutated package. Survivors can then be run against more tests.

    .venv/bin/mutmut run <any one mutant>      # writes mutants/ (stop it once it runs)
    .venv/bin/mutmut results --all true | grep _dataset | cut -d: -f1 > names.txt
    .venv/bin/python tools/run_mutants.py names.txt results.txt -- tests/test_dataset.py

It refuses to start while an unmutated file in mutants/ (a module mutmut copied as is,
or a test) differs from the source: copy the tests over after changing them. results.txt
gets one line per mutant, "name exit-code": 0 survived, 1 killed (a test failed), -14
stopped by the timeout; a second run skips the names already there. Each mutant's pytest
output is in mutants/logs/<name>.log.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUTANTS = os.path.join(ROOT, "mutants")


TRAMPOLINE = b"from mutmut.mutation.trampoline import"  # in each mutated module


def stale_copies() -> list[str]:
    """The files of mutants/ that mutmut copied unmutated (tests included) and that no
    longer match the source: the mutants would run against old code or old tests.
    Mutated modules cannot be compared; regenerate mutants/ when they change."""
    stale = []
    for folder in ("gradcam_func", "tests"):
        for parent, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                source = os.path.join(parent, name)
                copy = os.path.join(MUTANTS, os.path.relpath(source, ROOT))
                with open(source, "rb") as f:
                    wanted = f.read()
                got = b""
                if os.path.exists(copy):
                    with open(copy, "rb") as f:
                        got = f.read()
                if got != wanted and TRAMPOLINE not in got:
                    stale.append(os.path.relpath(source, ROOT))
    return stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", help="a file of mutant names, one per line")
    parser.add_argument("results", help="the file to append 'name exit-code' lines to")
    parser.add_argument("tests", nargs="+", help="pytest arguments, run in this order")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per mutant")
    args = parser.parse_args()
    names_path, results = os.path.abspath(args.names), os.path.abspath(args.results)

    stale = stale_copies()
    if stale:
        sys.exit(
            "mutants/ holds old copies of files that are not mutated; copy them over "
            "first (cp SOURCE mutants/SOURCE), or regenerate mutants/:\n  " + "\n  ".join(stale)
        )
    os.chdir(MUTANTS)
    sys.path[:0] = [MUTANTS, os.path.join(MUTANTS, "tests")]
    import pytest
    import torch  # noqa: F401  (imported once, before the forks)

    import gradcam_func

    if not gradcam_func.__file__.startswith(MUTANTS):
        sys.exit(f"gradcam_func came from {gradcam_func.__file__}, not from {MUTANTS}")
    os.makedirs("logs", exist_ok=True)

    with open(results, "a+") as f:
        f.seek(0)
        done = {line.split()[0] for line in f if line.strip()}
    with open(names_path) as f:
        names = [name for name in f.read().split() if name not in done]
    running: dict[int, str] = {}

    def reap() -> None:
        pid, status = os.wait()
        with open(results, "a") as f:
            f.write(f"{running.pop(pid)} {os.waitstatus_to_exitcode(status)}\n")

    for name in names:
        while len(running) >= args.jobs:
            reap()
        pid = os.fork()
        if pid == 0:
            os.environ["MUTANT_UNDER_TEST"] = name
            log = os.open(f"logs/{name}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(log, 1)
            os.dup2(log, 2)
            signal.alarm(args.timeout)
            code = pytest.main(
                ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"] + args.tests
            )
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(code))
        running[pid] = name
    while running:
        reap()

    with open(results) as f:
        codes = dict(line.split() for line in f if line.strip())
    survived = sorted(name for name, code in codes.items() if code == "0")
    print(
        f"{len(codes)} run: {sum(c == '1' for c in codes.values())} killed, "
        f"{len(survived)} survived, {sum(c not in ('0', '1') for c in codes.values())} other"
    )
    print("\n".join(survived))


if __name__ == "__main__":
    main()
