import sys

from prove_jobs.cli import main

sys.exit(main())
