"""Train a small MLP on scikit-learn's handwritten digits with graphc.

    python examples/train_mlp.py [--epochs 15] [--batch-size 64] [--backend auto]

The demo itself lives in the package, graphc/demo.py, so the command line
runs it too (``graphc demo --epochs 5``); this script only calls it. It
prints each epoch's mean training loss and test accuracy.
"""
from graphc.demo import main

if __name__ == "__main__":
    main()
