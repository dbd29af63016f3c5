"""The one exception type the command line turns into a one-line message and a non-zero exit."""


class CharrnnError(Exception):
    """A problem with the user's input, options or files: the message says what is wrong and what to do."""


class OutputClosed(Exception):
    """The reader of our output went away (`charrnn sample ... | head`): stop quietly, exit 0.

    Not an OSError on purpose: click turns an EPIPE OSError into exit status 1 on its own."""
