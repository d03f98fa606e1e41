"""Generated datasets, reproducible from a seed; each module registers itself with ``register_dataset``."""
