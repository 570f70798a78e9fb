"""`python -m asgiws` is the `asgiws` command."""

from asgiws.cli import main

if __name__ == "__main__":
    main()
