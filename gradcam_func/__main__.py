"""The ``gradcam-func`` command line.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``run(args)``; this file only wires them to argparse.
"""

import argparse
import importlib
import sys

COMMANDS = {
    "demo": ("gradcam_func._demo", "train a tiny CNN on synthetic shapes and explain it"),
    "explain-dataset": ("gradcam_func._dataset_cli", "explain a whole data set into shards"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gradcam-func", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(subparsers.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
