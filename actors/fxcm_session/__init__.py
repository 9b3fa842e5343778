"""fxcm_session: the broker connection (sim, replay, forexconnect), ticks, history and its quota.

Portable: runs on Python 3.7 too (the forexconnect broker only there).
"""

from actors.fxcm_session._broker import Broker, redact
from actors.fxcm_session._quota import Decision, HistoryQuota, QuotaSettings
from actors.fxcm_session._session import FxcmSession
from actors.fxcm_session._settings import FxcmSessionSettings

__all__ = ["Broker", "Decision", "FxcmSession", "FxcmSessionSettings", "HistoryQuota",
           "QuotaSettings", "redact"]
