"""`python -m ch07_alignment chat`: see ch07_alignment.chat.main."""
import sys

from .chat import main

sys.exit(main())
