import sys

from cnnkit.cli.main import main

sys.exit(main())
