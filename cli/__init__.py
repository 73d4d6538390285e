"""The ``staycheck`` command (:func:`staycheck.cli.main.main`), split by audience, with the
demo, a throwaway PKI and the shipped sample data. Nothing in the package imports it."""

__all__: list[str] = []
