"""The BIDS version this project writes (synthetic datasets, derivatives, generated cohorts)."""

BIDS_VERSION = "1.10.0"
