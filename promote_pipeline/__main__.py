import sys

from promote_pipeline.cli import main

sys.exit(main())
