"""Recipe helpers: the logic behind ``run.sh``'s stages (each module has ``--help``)."""
