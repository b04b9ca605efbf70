"""The one exception type that reaches a user as a one-line message."""


class UserError(Exception):
  """A problem with the user's input: the message names it and the fix.

  Entry points print it as a single line and exit with status 2; it is never
  shown with a traceback.
  """
  skip_teardown = False  # True: exit without the interpreter's teardown
