"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """A problem with the user's input (file, field, flag); the message names it and the fix."""
