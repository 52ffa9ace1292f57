"""One file per revision, named by its id (0001, 0002, ...)."""
