"""The `cotkit` command line (Typer). One module per command; heavy imports inside functions."""
