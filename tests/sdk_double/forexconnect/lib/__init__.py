"""The double's ``forexconnect.lib``: ``fxcorepy``, the stand-in for the native module."""
