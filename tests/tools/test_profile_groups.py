"""tools/profile_groups.py charges each py-spy sample to the group of its innermost frame."""

from __future__ import annotations

from pathlib import Path

from tools.profile_groups import breakdown, group_of, main

BASE = "run (twisted/internet/base.py:686);doPoll (twisted/internet/epollreactor.py:244)"


def _stack(*frames: str) -> list[str]:
    return [*BASE.split(";"), *frames]


def test_leaf_file_decides() -> None:
    assert group_of(_stack("flush (bridge/store.py:244)")) == "store/SQLite"
    assert group_of(_stack("decode (bridge/smpp/codec.py:150)", "decode (bridge/smpp/hotcodec.py:9)")) \
        == "smpplib + codec"
    assert group_of(_stack("render_POST (bridge/api.py:140)", "dumps (json/__init__.py:234)")) == "JSON"
    assert group_of(_stack("parse (email/headerregistry.py:10)")) == "HTTP intake (twisted.web)"
    assert group_of(_stack("_launch (bridge/outbox.py:357)")) == "outbox HTTP client"
    assert group_of(_stack("on_outcomes (bridge/dispatcher.py:90)")) == "pipeline modules"


def test_reactor_frames_keep_their_time() -> None:
    """Writing a PDU is transport work even when the SMPP session called it."""
    stack = _stack("submit (bridge/smpp/session.py:170)", "write (twisted/internet/abstract.py:360)")
    assert group_of(stack) == "Twisted reactor/transports"


def test_shared_twisted_web_files_follow_their_caller() -> None:
    headers = "getRawHeaders (twisted/web/http_headers.py:167)"
    assert group_of(_stack("request (twisted/web/client.py:952)", headers)) == "outbox HTTP client"
    assert group_of(_stack("dataReceived (twisted/web/http.py:2360)", headers)) == "HTTP intake (twisted.web)"


def test_library_code_goes_to_its_caller() -> None:
    assert group_of(_stack("_fresh (bridge/smpp/codec.py:107)", "copy (copy.py:92)")) == "smpplib + codec"
    assert group_of(_stack("main (bridge/cli.py:61)", "<module> (<string>:1)")) == "other"


def test_breakdown_of_a_raw_profile(tmp_path: Path, capsys: object) -> None:
    prof = tmp_path / "prof.txt"
    prof.write_text(f"{BASE};flush (bridge/store.py:244) 3\n{BASE};decode (smpplib/command.py:300) 1\n")
    result = breakdown(prof)
    assert result.samples == 4
    assert result.share("store/SQLite") == 75.0
    assert main([str(prof)]) == 0
