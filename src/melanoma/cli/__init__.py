"""The `melanoma` command line: each subcommand is a thin shell over a library function.

One module per stage registers its commands on the one app (common.py); `melanoma --help` lists
them in the stages' order.
"""

import importlib

from melanoma.cli.common import app, config_options, first_sentence, one_line

STAGES = ("data", "training", "evaluation", "clinical", "experiments", "bench", "demo")
for _stage in STAGES:
    importlib.import_module(f"melanoma.cli.{_stage}")  # registers the stage's commands, in this order

__all__ = ["STAGES", "app", "config_options", "first_sentence", "one_line"]
