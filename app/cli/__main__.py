"""`python -m app.cli ...`: the same as the `cor-bridge` console script."""

from app.cli import main

main()
