"""Generated protobuf code for ``staycheck.v1``: do not edit; run ``make proto``."""
