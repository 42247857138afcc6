"""`python -m cotkit` (and `accelerate launch -m cotkit train ...`)."""

from cotkit.cli.main import main

main()
