"""`python -m resume.models ...` (see `resume.models.cli`)."""

import sys

from resume.models.cli import main

if __name__ == "__main__":
    sys.exit(main())
