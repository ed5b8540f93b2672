"""The parsers of what wrk and curl print, on output captured from the real tools on 127.0.0.1."""

from __future__ import annotations

import pytest
from bench.load import CURL_WRITE_OUT, parse_curl_write_out, parse_duration_s, parse_wrk

# wrk 4.1.0, -t2 -c16 -d2s --latency, a static file from python -m http.server.
WRK_OK = """\
Running 2s test @ http://127.0.0.1:18765/ok.txt
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    18.96ms   82.47ms 835.14ms   95.48%
    Req/Sec     1.36k   638.03     2.21k    58.06%
  Latency Distribution
     50%    2.85ms
     75%    3.34ms
     90%    4.21ms
     99%  485.16ms
  4233 requests in 2.10s, 789.73KB read
Requests/sec:   2015.77
Transfer/sec:    376.07KB
"""

# -t1 -c1, a path that answers 404.
WRK_404 = """\
Running 2s test @ http://127.0.0.1:18765/missing
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   476.48us  822.57us   7.90ms   92.21%
    Req/Sec     2.97k   608.65     4.34k    71.43%
  Latency Distribution
     50%  242.00us
     75%  365.00us
     90%  818.00us
     99%    4.39ms
  6207 requests in 2.10s, 3.08MB read
  Non-2xx or 3xx responses: 6207
Requests/sec:   2954.60
Transfer/sec:      1.47MB
"""

# -t1 -c2 against a handler that sleeps 1.2 s: latencies in seconds, padded with a trailing space.
WRK_SECONDS = """\
Running 4s test @ http://127.0.0.1:18766/slow
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20s   645.67us   1.20s    66.67%
    Req/Sec     1.00      0.00     1.00    100.00%
  Latency Distribution
     50%    1.20s\x20
     75%    1.20s\x20
     90%    1.20s\x20
     99%    1.20s\x20
  6 requests in 4.01s, 678.00B read
Requests/sec:      1.50
Transfer/sec:     169.16B
"""

# A handler slower than wrk's 2 s timeout: no latency recorded, only socket errors.
WRK_TIMEOUT = """\
Running 4s test @ http://127.0.0.1:18766/timeout
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     5.00      7.07    10.00    100.00%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  2 requests in 4.01s, 226.00B read
  Socket errors: connect 0, read 0, write 0, timeout 2
Requests/sec:      0.50
Transfer/sec:      56.40B
"""


def test_wrk_rate_and_p99_in_ms() -> None:
    result = parse_wrk(WRK_OK)
    assert result.requests_per_s == 2015.77
    assert result.p99_ms == pytest.approx(485.16)
    assert result.requests == 4233
    assert result.non_2xx_3xx == 0
    assert result.socket_errors == {}


def test_wrk_microseconds_and_non_2xx_count() -> None:
    result = parse_wrk(WRK_404)
    assert result.p99_ms == pytest.approx(4.39)
    assert result.non_2xx_3xx == result.requests == 6207


def test_wrk_seconds_with_trailing_space() -> None:
    result = parse_wrk(WRK_SECONDS)
    assert result.p99_ms == pytest.approx(1200.0)
    assert result.requests_per_s == 1.5


def test_wrk_socket_errors() -> None:
    result = parse_wrk(WRK_TIMEOUT)
    assert result.socket_errors == {"connect": 0, "read": 0, "write": 0, "timeout": 2}
    assert result.p99_ms == 0.0


def test_wrk_other_output_is_an_error() -> None:
    with pytest.raises(ValueError, match="not wrk --latency output"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.parametrize(("text", "seconds"), [("476.48us", 476.48e-6), ("2.85ms", 2.85e-3), ("1.20s", 1.2),
                                               ("1.50m", 90.0)])
def test_wrk_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


def test_curl_write_out() -> None:
    # curl 7.88.1 -s -o /dev/null -w CURL_WRITE_OUT, a 20 MiB layer and a ranged second half.
    assert CURL_WRITE_OUT == "%{size_download} %{time_total} %{http_code}"
    whole = parse_curl_write_out("20981760 0.030712 200")
    assert (whole.size, whole.seconds, whole.status) == (20981760, 0.030712, 200)
    assert whole.mb_per_s == pytest.approx(20981760 / 0.030712 / 1e6)
    assert parse_curl_write_out("10490880 0.007924 206").status == 206


def test_curl_write_out_of_a_refused_connection() -> None:
    assert parse_curl_write_out("0 0.000096 000").status == 0


def test_curl_write_out_garbage_is_an_error() -> None:
    with pytest.raises(ValueError, match="is not"):
        parse_curl_write_out("<html>")
