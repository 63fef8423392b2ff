"""Kaggle datasets by handle (owner/dataset) through kagglehub, with a plain message when it can't."""

from __future__ import annotations

import re
from pathlib import Path

from core.errors import DatasetError

_HANDLE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(/versions/\d+)?$")
_HOW = (
    "Kaggle downloads need internet access and Kaggle credentials (~/.kaggle/kaggle.json, or the "
    "KAGGLE_USERNAME and KAGGLE_KEY environment variables). Without them, download the dataset's zip "
    "from kaggle.com on another machine and open it here as a zip or a folder."
)


def download(handle: str) -> Path:
    """Download (or reuse kagglehub's cached copy of) a dataset and return its local folder."""
    handle = handle.strip()
    if not _HANDLE.match(handle):
        raise DatasetError(f"'{handle}' is not a Kaggle dataset handle; use owner/dataset, e.g. paultimothymooney/chest-xray-pneumonia.")
    try:
        import kagglehub
    except ImportError as exc:
        raise DatasetError("The kagglehub package is not installed (pip install kagglehub). " + _HOW) from exc
    try:
        return Path(kagglehub.dataset_download(handle))
    except Exception as exc:  # noqa: BLE001 - network, auth and HTTP errors all mean "could not download"
        reason = type(exc).__name__
        if "Resolution" in str(exc) or "ConnectionError" in reason:
            reason = "no network connection to Kaggle"
        elif "401" in str(exc) or "403" in str(exc) or "Unauthenticated" in reason:
            reason = "Kaggle refused the credentials"
        elif "404" in str(exc):
            reason = "no such dataset on Kaggle"
        raise DatasetError(f"Could not download '{handle}' from Kaggle ({reason}). {_HOW}") from exc
