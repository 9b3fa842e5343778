"""history_poller: the bar store, warmup, gap repair and the history commands."""

from actors.history_poller._actor import HistoryPoller
from actors.history_poller._settings import HistoryPollerSettings
from actors.history_poller._store import BarStore

__all__ = ["BarStore", "HistoryPoller", "HistoryPollerSettings"]
