import sys

from datasets_builders.corpus.build import cli

cli(sys.argv[1:])
