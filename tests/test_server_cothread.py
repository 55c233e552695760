"""capva.server.cothread: handlers run as cothreads in the thread that runs cothread's
scheduler (here the test's own thread), reached from the network loop through
cothread.Callback; and a clear ImportError when cothread is absent."""

from __future__ import annotations

import subprocess
import sys
import threading

import cothread
import pytest
from p4p.client.thread import Context

from capva.nt import NTScalar
from capva.server import Server
from capva.server.cothread import SharedPV


@pytest.mark.timeout(60)
def test_cothread_put_get_and_first_connect():
    seen = {}
    pv = SharedPV(nt=NTScalar("d"), initial=1.0)

    @pv.put
    def put(pv, op):
        seen["thread"] = threading.current_thread()
        pv.post(op.value() * 2)
        op.done()

    @pv.onFirstConnect
    def first(pv):
        seen["first"] = True

    with Server(providers=[{"co:x": pv}], isolate=True) as S:
        result = {}

        def client():
            try:
                with Context("pva", conf=S.conf(), useenv=False) as C:
                    C.put("co:x", 21.0, timeout=10)
                    result["value"] = C.get("co:x", timeout=10)
            except Exception as e:  # reported below, in the test's thread
                result["error"] = e

        t = threading.Thread(target=client)
        t.start()
        for _ in range(400):  # run the cothread scheduler until the client is done (<= 20 s)
            if not t.is_alive():
                break
            cothread.Sleep(0.05)
        t.join(5)
    assert "error" not in result, result.get("error")
    assert result["value"] == 42.0
    assert seen["thread"] is threading.main_thread() or seen["thread"] is threading.current_thread()
    assert seen.get("first") is True


def test_clear_error_without_cothread():
    code = (
        "import sys; sys.modules['cothread'] = None\n"
        "try:\n    import capva.server.cothread\nexcept ImportError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "ERR" in out and "pip install cothread" in out
