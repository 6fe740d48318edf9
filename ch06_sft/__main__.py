"""`python -m ch06_sft train --base tiny --out DIR`: see ch06_sft.finetune.main."""
import sys

from .finetune import main

sys.exit(main())
