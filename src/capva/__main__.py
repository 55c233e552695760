"""``python -m capva ...``: the command line client (:mod:`capva.client.cli`)."""

from capva.client.cli import run

if __name__ == "__main__":
    run()
