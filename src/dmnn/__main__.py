"""``python -m dmnn …``: the ``dmnn`` command, also as ``torchrun -m dmnn train …``."""

from dmnn.cli import main

if __name__ == "__main__":
    main()
