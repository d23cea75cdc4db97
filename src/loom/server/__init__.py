"""The control plane process: application services over the store, and their servers."""
