"""The forexconnect broker's pure parts: the server-clock estimate and the SDK's instrument
names."""

from __future__ import annotations

import random

import pytest

from actors.fxcm_session._clock import ClockSkew
from protocol.market import fxcm_instrument, normalize_symbol

# -- the server clock ---------------------------------------------------------------------------

SECOND = 1000


def feed(skew: ClockSkew, offset_ms: int, start_ms: int, seconds: float, rate: float,
         delays: random.Random, max_delay_ms: float = 300.0) -> int:
    """Ticks every 1/rate s of local time, stamped by a server ``offset_ms`` ahead, each
    arriving 5..max_delay_ms late; returns the local time at the end."""
    local = start_ms
    for _ in range(int(seconds * rate)):
        local += int(SECOND / rate)
        delay = delays.uniform(5.0, max_delay_ms)
        skew.observe(int(local + offset_ms - delay), local)
    return local


def test_no_estimate_before_the_first_tick() -> None:
    skew = ClockSkew()
    assert skew.offset_ms() is None
    skew.observe(1_000_500, 1_000_000)
    assert skew.offset_ms() == 500  # the first tick already tells


@pytest.mark.parametrize("offset_ms", [5000, -5000, 0, 123])
def test_the_estimate_is_the_offset_less_the_smallest_delay_never_more(offset_ms: int) -> None:
    skew = ClockSkew()
    feed(skew, offset_ms, 1_800_000_000_000, 120, 20, random.Random(offset_ms))
    estimate = skew.offset_ms()
    assert estimate is not None
    # Latency only makes ticks look older: the clock built on it is never ahead of the server.
    assert offset_ms - 30 <= estimate <= offset_ms - 5


def test_one_tick_stamped_in_the_future_does_not_move_the_estimate() -> None:
    skew = ClockSkew()
    local = feed(skew, 2000, 1_800_000_000_000, 60, 10, random.Random(1))
    before = skew.offset_ms()
    assert before is not None
    skew.observe(local + 2000 + 3_600_000, local + 10)  # an hour ahead: a bogus time
    after = skew.offset_ms()
    # Its bucket's maximum is an hour off; the median of the buckets moves by a tick at most.
    assert after is not None and abs(after - before) <= 30
    feed(skew, 2000, local + 10, 30, 10, random.Random(2))
    after = skew.offset_ms()
    assert after is not None and abs(after - before) <= 30


def test_a_step_of_either_clock_is_followed_once_it_holds_half_the_buckets() -> None:
    skew = ClockSkew(bucket_ms=10 * SECOND, buckets=9)
    local = feed(skew, 0, 1_800_000_000_000, 120, 10, random.Random(3), 50)
    assert -50 <= skew.offset_ms() <= 0  # type: ignore[operator]
    local = feed(skew, 4000, local, 30, 10, random.Random(4), 50)  # an NTP step of 4 s
    assert skew.offset_ms() < 1000  # type: ignore[operator]  # 3 of 9 buckets: not yet
    feed(skew, 4000, local, 30, 10, random.Random(5), 50)
    assert 3950 <= skew.offset_ms() <= 4000  # type: ignore[operator]  # 6 of 9: followed


def test_a_quiet_market_keeps_the_last_estimate() -> None:
    skew = ClockSkew()
    local = feed(skew, -3000, 1_800_000_000_000, 60, 5, random.Random(6))
    before = skew.offset_ms()
    # Two days without ticks, then one late tick: the weekend's silence is not a new clock.
    skew.observe(local + 2 * 86_400_000 - 3000 - 250, local + 2 * 86_400_000)
    assert skew.offset_ms() == before


def test_absurd_times_are_discarded_and_counted() -> None:
    skew = ClockSkew()
    skew.observe(0, 1_800_000_000_000)  # a 1970 time
    skew.observe(1_800_000_000_000 + 2 * 86_400_000, 1_800_000_000_000)
    assert skew.offset_ms() is None
    assert skew.status()["discarded"] == 2 and skew.status()["samples"] == 0


def test_our_clock_stepping_back_is_folded_into_the_newest_bucket() -> None:
    skew = ClockSkew(bucket_ms=SECOND, buckets=3)
    skew.observe(10_000_100, 10_000_000)
    skew.observe(9_000_200, 9_000_000)  # our clock went back a second... by 1000 s
    assert skew.offset_ms() == 200
    assert skew.status()["buckets"] == 1


# -- instrument names ---------------------------------------------------------------------------

FXCM_NAMES = ["EUR/USD", "USD/JPY", "XAU/USD", "XAG/USD", "BTC/USD", "ETH/USD", "USOil",
              "UKOil", "Copper", "NGAS", "SPX500", "US30", "NAS100", "GER30", "UK100",
              "JPN225", "Bund", "USDOLLAR", "EUR/TRY", "USD/CNH"]


@pytest.mark.parametrize("name", FXCM_NAMES)
def test_fxcm_names_round_trip_through_ours(name: str) -> None:
    assert fxcm_instrument(normalize_symbol(name)) == name


def test_names_that_are_not_pairs_get_no_invented_slash() -> None:
    assert fxcm_instrument("COPPER") == "Copper"  # not COP/PER
    assert fxcm_instrument("usoil") == "USOil"
    assert fxcm_instrument("GOLDXX") == "GOLDXX"  # unknown: passes through, no slash
    assert fxcm_instrument("ABCDEF") == "ABCDEF"
    assert fxcm_instrument("EURUSD") == "EUR/USD"
