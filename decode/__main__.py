"""`python -m decode` runs the CLI."""
import sys

from decode.cli import main

sys.exit(main())
