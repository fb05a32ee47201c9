"""Run tests/fake_activecampaign.py as a standalone server; print its URL to stdout."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.fake_activecampaign import FakeActiveCampaign  # noqa: E402

fake = FakeActiveCampaign(lists={1: "Newsletter"}, rate_limit=None).start()
print(fake.url, flush=True)
while True:
    time.sleep(3600)
