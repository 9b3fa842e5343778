"""The wheel's ``forexconnect.errors``: built with the message only; ``args`` stay empty and
the text is in ``msg`` and ``str()`` (as observed)."""


class _Failure(Exception):
    msg = ""

    def __init__(self, error_text: str) -> None:
        Exception.__init__(self)
        self.msg = error_text

    def __str__(self) -> str:
        return self.msg


class RequestFailedError(_Failure):
    """Reserved for future use."""


class TableManagerError(_Failure):
    """Reserved for future use."""


class LoginFailedError(_Failure):
    """Reserved for future use."""


class TimeFrameError(_Failure):
    """Reserved for future use."""
