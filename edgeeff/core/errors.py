"""The one error type the CLI turns into a one-line message and exit code 2."""


class EdgeeffError(Exception):
    """Bad input or a missing prerequisite the user can fix. Printed as one line; exit 2."""


class RandomWeightsWarning(UserWarning):
    """A model was built without trained weights: its predictions are meaningless."""


class FieldError(EdgeeffError):
    """Bad input in named parameters. ``fields`` are the parameters as the core names them
    (``field`` the first), ``template`` the message with each written ``{name}``. ``str()``
    names the parameters themselves; a front end shows its own names for them with
    :meth:`render` (the CLI passes its table of flags), so the core never names a flag."""

    def __init__(self, template: str, *fields: str):
        self.template, self.fields = template, tuple(fields)
        self.field = self.fields[0] if self.fields else None
        super().__init__(self.render({}))

    def render(self, names: dict[str, str]) -> str:
        """The message with each field shown as ``names`` calls it (else by its own name)."""
        text = self.template
        for f in self.fields:
            text = text.replace("{" + f + "}", names.get(f, f))
        return text
