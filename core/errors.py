"""The error types a user can act on.

Every failure that comes from bad input (a file, a folder, a CSV, a zip) is raised as one of these,
with a message that says what is wrong and what to do, so pages can show it instead of a traceback.
"""


class MedImageError(ValueError):
    """Base of all user-facing errors: the message is meant to be shown as it is."""


class ImageReadError(MedImageError):
    """An image or DICOM file could not be read."""


class DatasetError(MedImageError):
    """A dataset source (folder, CSV, zip) could not be turned into a dataset table."""
