"""``python -m lorsp.bench``: the same as ``lorsp bench``."""
import argparse

from .cli import DESCRIPTION, EPILOG, add_arguments, main

parser = add_arguments(argparse.ArgumentParser(prog="python -m lorsp.bench", description=DESCRIPTION,
                                               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter))
raise SystemExit(main(parser.parse_args()))
