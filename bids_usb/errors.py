"""Errors that end a run with one clear line and a BIDS-App exit code.

The exit codes follow the BIDS Execution specification (and sysexits.h): every message names
the file at fault and what to do about it, so that a user reading a cluster log knows the fix
without reading a traceback.
"""

from __future__ import annotations


class BidsUsbError(Exception):
    exit_code = 1


class ValidationFailed(BidsUsbError):
    exit_code = 16  # BIDS validation failed


class UnknownLevel(BidsUsbError):
    exit_code = 17


class NothingSelected(BidsUsbError):
    exit_code = 18  # entity filtering selected no files


class UsageError(BidsUsbError):
    exit_code = 64


class DataError(BidsUsbError):
    exit_code = 65  # an input file exists but cannot be used


class NoInput(BidsUsbError):
    exit_code = 66  # valid BIDS, but the files this run needs are missing


class CannotCreateOutput(BidsUsbError):
    exit_code = 73


class IOFailure(BidsUsbError):
    exit_code = 74
