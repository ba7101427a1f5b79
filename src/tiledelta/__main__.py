"""``python -m tiledelta``: the ``tiledelta`` command."""

from tiledelta.cli import main

if __name__ == "__main__":  # pragma: no cover
    main(prog_name="tiledelta")
