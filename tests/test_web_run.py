"""`mailgate run` as its own process, web side included: the worker process makes the mail's
links and the daemon serves them, so the port the daemon bound (`MAILGATE_WEB_PORT=0`: any free
one) must be the one in the links; and the very first page requests, arriving together, are all
served (they once raced the ORM's lazy set-up in a fresh process)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import Sink, body_of, deliver, free_port, make_mail, write_config
from support.daemon_process import DaemonProcess
from support.web import CUSTOMER, http, one_click_url


def test_links_from_the_worker_process_reach_the_daemons_web_port(tmp_path: Path, sink: Sink) -> None:
    port = free_port()
    daemon = DaemonProcess(
        write_config(tmp_path / "desk", relay_port=sink.port, smtp_port=port),
        port,
        env={"MAILGATE_WEB_PORT": "0"},
    )
    daemon.start()
    try:
        deliver(port, make_mail("Gift card balance"))
        ack = sink.wait_to(CUSTOMER, 1, timeout=60)[-1]
        view = re.search(r"View request: (\S+)", body_of(ack)).group(1)  # type: ignore[union-attr]
        assert not view.startswith("http://127.0.0.1:0/")
        with ThreadPoolExecutor(8) as pool:
            pages = list(pool.map(lambda _: http("GET", view), range(8)))
        assert [p.status for p in pages] == [200] * 8, [p.text[:200] for p in pages if p.status != 200]
        assert all("Gift card balance" in p.text for p in pages)
        base = view.split("/r/")[0]
        assert http("GET", f"{base}/healthz").text == "ok\n"
        assert http("POST", one_click_url(ack), {"List-Unsubscribe": "One-Click"}).status == 200
    finally:
        daemon.stop()
    assert "web listener on 127.0.0.1:" in daemon.log.read_text()
