"""Bookkeeping for ``dask_faults`` (a package, shipped with the config folder's modules)."""
