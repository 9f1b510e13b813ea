"""The one error type the CLI turns into a one-line message and exit code 2."""


class EdgeeffError(Exception):
    """Bad input or a missing prerequisite the user can fix. Printed as one line; exit 2."""


class RandomWeightsWarning(UserWarning):
    """A model was built without trained weights: its predictions are meaningless."""
