import sys

from calibsuite_h5source.cli import main

sys.exit(main())
