"""Checks of text that every app shares."""

import re

# Control characters: never in a name, a path or a command line.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
