"""`python -m rsp …`: the same command line as the `rsp` console script (tests run it this way)."""

from rsp.cli import main

main()
