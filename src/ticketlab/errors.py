"""User-facing errors.

Every problem a user can fix (bad config, missing data, corrupt checkpoint) raises a subclass of
`TicketlabError` with a one-line message that names the problem and the fix. The CLI turns these into
exit status 2 without a traceback; library users can catch them like any exception.
"""


class TicketlabError(Exception):
    """Base class of errors caused by user input rather than by a bug."""


class ConfigError(TicketlabError, ValueError):
    """A config field, preset or flag is unknown, ill-typed or out of range."""


class DataError(TicketlabError):
    """Data files are missing, unreadable or inconsistent."""


class CheckpointError(TicketlabError):
    """A checkpoint, mask or run directory is missing, corrupt or incompatible."""


class MissingDependencyError(TicketlabError, ImportError):
    """An optional package is not installed; the message names the extra that installs it."""
