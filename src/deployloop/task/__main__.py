import sys

from deployloop.task.run import main

sys.exit(main())
