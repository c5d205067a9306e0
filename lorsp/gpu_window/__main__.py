"""``python -m lorsp.gpu_window``: the same commands as ``lorsp gpu-window``."""
import argparse

from . import __doc__ as _doc
from .cli import add_arguments, main

if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="python -m lorsp.gpu_window", description=_doc.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
