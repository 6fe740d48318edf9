"""`python -m ch05_pretraining train --preset tiny --out DIR`: see ch05_pretraining.pretrain.main."""
import sys

from .pretrain import main

sys.exit(main())
