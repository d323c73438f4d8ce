import sys

from promote_pipeline.cli.main import main

sys.exit(main())
