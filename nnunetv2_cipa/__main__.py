import sys

from nnunetv2_cipa.cli import main

sys.exit(main())
