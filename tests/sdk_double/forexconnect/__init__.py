"""An SDK-shaped double of the ``forexconnect`` 1.6.43 wheel, for tests (Python 3.7 too).

Put ``tests/sdk_double`` first on ``PYTHONPATH`` and ``import forexconnect`` finds this instead
of the wheel: the same package layout, class and method names and signatures, enum values and
order, offer rows, history dtype and listener threading, over a scripted FXCM (see
``forexconnect.lib._server`` for the scenario format). ``tests/test_forexconnect_double.py``
compares this surface with the real wheel's whenever ``.venv37`` has it, so it cannot drift.
"""

from forexconnect import errors
from forexconnect.common import Common
from forexconnect.ForexConnect import ForexConnect
from forexconnect.lib import fxcorepy
from forexconnect.SessionStatusListener import SessionStatusListener
from forexconnect.TableListener import TableListener
from forexconnect.TableManagerListener import TableManagerListener

__all__ = ["Common", "ForexConnect", "SessionStatusListener", "TableListener",
           "TableManagerListener", "errors", "fxcorepy"]
