"""The error every layer raises for a user mistake in a recipe, a command line or a file it names; the scripts
turn it into a one-line message and a non-zero exit (`mindcv.config.builders.exit_on_user_error`)."""


class ConfigError(ValueError):
    """A recipe, command line or named file that does not fit what the toolkit accepts."""
