"""`torchrun --nproc-per-node N -m appendix_distributed train --strategy S ...`: see appendix_distributed.launch.main."""
import sys

from .launch import main

sys.exit(main())
