"""The one exception type the command line turns into a one-line message and a non-zero exit."""


class CharrnnError(Exception):
    """A problem with the user's input, options or files: the message says what is wrong and what to do."""
