"""`python -m fastforget` (and `torchrun -m fastforget train --ddp`): the command line."""

from fastforget.cli import main

main()
