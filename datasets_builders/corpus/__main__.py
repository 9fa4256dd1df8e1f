import sys

from datasets_builders.corpus.build import cli
from scalingdown.errors import run_cli

run_cli(lambda: cli(sys.argv[1:]))
