"""`python -m ch01_data build --out DIR [--input FOLDER]`: build the chapter's corpus."""
import sys

from .pipeline import main

sys.exit(main())
