"""The reconciler in-process: one tick, driven by the test, sends what the broker
missed through the app's producer (the stub here)."""

from __future__ import annotations

from api.reconciler import Reconciler


def test_a_job_the_broker_missed_goes_out_on_the_next_tick_once(inproc):
    inproc.stub.broker_down = True
    job = inproc.submit()
    assert inproc.stub.take() == []
    inproc.stub.broker_down = False
    inproc.backdate(job["id"], seconds=60)
    reconciler = Reconciler(inproc.state)
    try:
        inproc.client.portal.call(reconciler.tick)
        sent = [m for m in inproc.stub.take() if m.job_id == job["id"]]
        assert [(m.queue, m.priority, m.attempt_hint) for m in sent] == \
            [("llm", "interactive", 0)]
        # Marked published: the next tick leaves it alone.
        inproc.client.portal.call(reconciler.tick)
        assert [m for m in inproc.stub.take() if m.job_id == job["id"]] == []
    finally:
        inproc.client.portal.call(reconciler.stop)
