"""``python -m edgeeff``: the ``edgeeff`` command, for a venv whose bin/ is not on PATH."""

from edgeeff.cli import main

if __name__ == "__main__":
    main(prog_name="edgeeff")
