"""Retrain the embedded default (thin wrapper of `python -m gvt.default_model.train_default`).

python scripts/train_default_model.py --overwrite            # writes src/gvt/default_model/weights (~30 min, 2 cores)
python scripts/train_default_model.py --fast --output-dir /tmp/smoke
"""

import sys

from gvt.default_model.train_default import main

if __name__ == "__main__":
    sys.exit(main())
