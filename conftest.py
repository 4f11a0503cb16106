"""pytest collection for the whole repository: tests/ and the doctests of every module of the package."""

collect_ignore = ["colbert_az_pylate/__main__.py"]  # importing it runs the command line
