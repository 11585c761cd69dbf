"""`python -m resume.retriever ...`: one torchrun worker (see `resume.retriever.worker`)."""

import sys

from resume.retriever.worker import main

if __name__ == "__main__":
    sys.exit(main())
