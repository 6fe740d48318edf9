"""`python -m ch07_alignment chat | build | export`: one command line for the book's finished model."""
import argparse
import sys

from . import build, chat, export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ch07_alignment",
                                     description="Talk to the book's model, build the whole book, or export the model.")
    commands = parser.add_subparsers(dest="command", required=True)
    chat.add_parser(commands)
    build.add_parser(commands)
    export.add_parser(commands)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
